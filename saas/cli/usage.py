"""`saas usage` and `saas invoices`: what an account used, and what every account owes."""

from enum import StrEnum
from typing import Annotated

import typer

from saas.accounts import service as accounts
from saas.cli.output import JsonFlag, emit_json, table
from saas.cli.session import db_session
from saas.kit import months
from saas.usage import service


class InvoiceFormat(StrEnum):
    json = "json"
    csv = "csv"


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
    app.command("invoices")(invoices)


def usage(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: this month, UTC).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An account's usage for a month: billable requests, characters, by endpoint and day."""
    month = month or months.current()
    with db_session() as session:
        service.month_bounds(month)  # a clear error for a bad month
        owner = accounts.find_account(session, account)
        report = service.account_month_usage(
            session, owner, accounts.plan_of(session, owner), month
        )
    if as_json:
        emit_json(report)
        return
    quota = report["plan"]["monthly_quota"]
    typer.echo(
        f"{report['account']} {month}: {report['billable_requests']} billable requests"
        f" of {quota if quota is not None else 'unlimited'}, {report['requests']} requests,"
        f" {report['characters']} characters"
    )
    table(report["by_endpoint"], ["endpoint", "billable_requests", "requests", "characters"])


def invoices(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    format: Annotated[InvoiceFormat, typer.Option(help="json or csv")] = InvoiceFormat.json,
) -> None:
    """One invoice line per account for the month."""
    with db_session() as session:
        service.month_bounds(month)
        lines = service.invoices(session, month)
    if format is InvoiceFormat.json:
        emit_json({"month": month, "invoices": lines})
    else:
        typer.echo(service.invoices_csv(lines), nl=False)
