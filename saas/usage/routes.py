"""Usage for customers (their own account, this month) and admins (any account, invoices)."""

import csv
import io
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session
from starlette.responses import Response

from saas.accounts.models import Account, Plan
from saas.db import get_session
from saas.errors import AppError, NotFound
from saas.usage import service

customer_router = APIRouter(prefix="/v1", tags=["usage"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])
DbSession = Annotated[Session, Depends(get_session)]
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


@customer_router.get("/usage")
def my_usage(request: Request, session: DbSession) -> dict[str, Any]:
    """This month's billable requests and characters, by endpoint and by day, with the plan's
    limits and the quota that remains. `billable_requests` is the month's total."""
    principal = request.state.principal
    account = session.get(Account, principal.account_id)
    plan = session.get(Plan, account.plan_id) if account else None
    if account is None or plan is None:
        raise NotFound("Account not found.")
    return service.account_month_usage(session, account, plan, service.current_month())


@admin_router.get("/usage")
def usage(
    session: DbSession,
    account: int | None = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
    granularity: Literal["day", "hour"] = "day",
    endpoint: str | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    """Usage per bucket (day or hour, UTC), account, endpoint and status. Defaults to the last
    30 days."""
    end = to or date.today()
    start = from_ or end - timedelta(days=29)
    if start > end:
        raise AppError("'from' must not be after 'to'.", status_code=422)
    rows = service.usage_series(
        session,
        start=start,
        end=end,
        granularity=granularity,
        account_id=account,
        endpoint=endpoint,
        status=status,
    )
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "granularity": granularity,
        "rows": rows,
    }


@admin_router.get("/invoices", response_model=None)
def invoices(
    session: DbSession,
    month: Annotated[str, Query(pattern=MONTH_PATTERN, examples=["2026-11"])],
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    """One line per account: plan, billable requests, base fee, metered amount and total, in
    cents (total = base fee + ceil(billable / 1000 x price per 1000))."""
    lines = service.invoices(session, month)
    if format == "json":
        return {"month": month, "invoices": lines}
    return Response(
        to_csv(lines),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="invoices-{month}.csv"'},
    )


CSV_FIELDS = [
    "month",
    "account_id",
    "account",
    "plan",
    "billable_requests",
    "base_fee_cents",
    "metered_cents",
    "total_cents",
]


def to_csv(lines: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()
