"""`saas maintain`: the database's daily upkeep (cron, or ops/k8s/jobs/maintain-cronjob.yaml)."""

from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from saas.cli.output import JsonFlag, emit_json
from saas.cli.session import fail_database
from saas.config import get_settings
from saas.idempotency import store as idempotency
from saas.kit.db import make_engine
from saas.usage import partitions


def register(app: typer.Typer) -> None:
    app.command("maintain")(maintain)


def maintain(
    ahead: Annotated[
        int, typer.Option(min=0, help="Months made beyond the current one.")
    ] = partitions.AHEAD_MONTHS,
    as_json: JsonFlag = False,
) -> None:
    """Ledger partitions (PostgreSQL): make this month's and the next ones, drop the months older
    than SAAS_USAGE_RETENTION_MONTHS whole (rollups stay). Delete expired Idempotency-Key
    answers and claims (both databases). Idempotent; run it daily."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    now = datetime.now(UTC)
    try:
        report = partitions.maintain(
            engine,
            today=now.date(),
            ahead=ahead,
            retention_months=settings.usage_retention_months,
        )
        expired_keys = idempotency.delete_expired(engine, now=now)
    except DBAPIError as exc:
        # A lock not granted in time (a long query on the ledger), or a run that met another:
        # nothing half-done stays (each step is one transaction); run it again later.
        fail_database(exc)
    finally:
        engine.dispose()
    if as_json:
        emit_json(report.as_dict() | {"idempotency_keys_deleted": expired_keys})
        return
    for line in report.lines():
        typer.echo(line, err=line.startswith("warning:"))
    typer.echo(f"idempotency keys: {expired_keys} expired deleted")
