"""The audit log: every admin write records who (Actor), what, which object and the change, in
the transaction of the change itself."""

from typing import Any

from sqlmodel import Session, col, select

from saas.audit.models import AuditEntry
from saas.auth.principal import Actor


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: object,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Adds the entry to the caller's transaction: it commits with the change it describes."""
    entry = AuditEntry(
        actor_key_id=actor.key_id,
        actor_account_id=actor.account_id,
        via=actor.via,
        actor_name=actor.name,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=changes or {},
    )
    session.add(entry)
    return entry


def search(
    session: Session,
    *,
    actor_key_id: int | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    via: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEntry]:
    """Newest first."""
    statement = select(AuditEntry)
    if actor_key_id is not None:
        statement = statement.where(AuditEntry.actor_key_id == actor_key_id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    if object_type is not None:
        statement = statement.where(AuditEntry.object_type == object_type)
    if object_id is not None:
        statement = statement.where(AuditEntry.object_id == object_id)
    if via is not None:
        statement = statement.where(AuditEntry.via == via)
    statement = statement.order_by(col(AuditEntry.id).desc()).offset(offset).limit(limit)
    return list(session.exec(statement))
