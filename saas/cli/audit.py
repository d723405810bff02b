"""`saas audit`: the newest admin writes (the admin API's GET /admin/audit)."""

from typing import Annotated

import typer

from saas.audit import service
from saas.audit.schemas import AuditPublic
from saas.cli.output import JsonFlag, listing
from saas.cli.session import db_session

COLUMNS = ["id", "at", "via", "actor_name", "actor_key_id", "action", "object_type", "object_id"]


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    action: Annotated[str | None, typer.Option(help="e.g. key.revoke")] = None,
    object_type: Annotated[str | None, typer.Option(help="plan, account or key")] = None,
    object_id: str | None = None,
    actor_key_id: int | None = None,
    via: Annotated[str | None, typer.Option(help="api or cli")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Admin writes, newest first: who, through which door, what, which object, the change."""
    with db_session() as session:
        entries = [
            AuditPublic.of(entry)
            for entry in service.search(
                session,
                action=action,
                object_type=object_type,
                object_id=object_id,
                actor_key_id=actor_key_id,
                via=via,
                limit=limit,
            )
        ]
    listing(entries, [*COLUMNS, "changes"], as_json)
