"""The audit log: every admin write records who (Actor), what, which object and the change, in
the transaction of the change itself."""

from typing import Any, Protocol

from sqlmodel import Session, col, select

from saas.audit.models import AuditEntry
from saas.auth.principal import Actor


class Row(Protocol):
    """A table's row: its id is set once it is flushed."""

    id: int | None


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    object_id: object,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Adds the entry to the caller's transaction: it commits with the change it describes.
    `action` is "<object type>.<verb>" ("key.revoke"): the entry's object type is its first part."""
    entry = AuditEntry(
        actor_key_id=actor.key_id,
        actor_account_id=actor.account_id,
        via=actor.via,
        actor_name=actor.name,
        action=action,
        object_type=action.partition(".")[0],
        object_id=str(object_id),
        changes=changes or {},
    )
    session.add(entry)
    return entry


def save(
    session: Session,
    row: Row,
    *,
    actor: Actor,
    action: str,
    changes: dict[str, Any],
    object_id: object = None,
) -> None:
    """Flushes `row` and records `action` on it, in the same transaction. The entry names the
    row by `object_id`, or else by its id (a new row has one once flushed)."""
    session.add(row)
    session.flush()
    record(
        session,
        actor=actor,
        action=action,
        object_id=row.id if object_id is None else object_id,
        changes=changes,
    )


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
