"""Usage for customers (their own account, this month) and admins (any account, invoices)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from saas.accounts import service as accounts
from saas.kit import months
from saas.kit.fields import Id, IsoDate, Stored
from saas.problems.errors import Invalid
from saas.usage import service
from saas.usage.schemas import Invoices, MonthUsage, UsageSeries
from saas.web.context import ADMIN_PREFIX, CUSTOMER_PREFIX, Metering
from saas.web.deps import CurrentPrincipal, DbSession
from saas.web.openapi import ADMIN, CUSTOMER

customer_router = APIRouter(prefix=CUSTOMER_PREFIX, tags=["usage"], responses=CUSTOMER)
admin_router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], responses=ADMIN)

# What the customer routes cost (see saas/web/context.py).
METERING = {"my_usage": Metering("usage")}


@customer_router.get("/usage", response_model=MonthUsage)
def my_usage(principal: CurrentPrincipal, session: DbSession) -> dict[str, Any]:
    """This month's billable requests and characters, by endpoint and by day, with the plan's
    limits and the quota that remains. `billable_requests` is the month's total."""
    account = accounts.get_account(session, principal.account_id)
    plan = accounts.plan_of(session, account)
    return service.account_month_usage(session, account, plan, months.current())


@admin_router.get("/usage", response_model=UsageSeries)
def usage(
    session: DbSession,
    account: Id | None = None,
    from_: Annotated[IsoDate | None, Query(alias="from")] = None,
    to: IsoDate | None = None,
    granularity: Literal["day", "hour"] = "day",
    endpoint: Stored | None = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
) -> dict[str, Any]:
    """Usage per bucket (day or hour, UTC), account, endpoint and status. Defaults to the last
    30 days."""
    end = to or datetime.now(UTC).date()  # the buckets are UTC days
    start = from_ or end - timedelta(days=29)
    if start > end:
        raise Invalid("'from' must not be after 'to'.")
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


# A Response (the CSV) passes through as it is; the model documents and checks the JSON.
@admin_router.get(
    "/invoices",
    response_model=Invoices,
    responses={200: {"description": "JSON, or CSV with format=csv", "content": {"text/csv": {}}}},
)
def invoices(
    session: DbSession,
    month: Annotated[str, Query(pattern=months.PATTERN, examples=["2026-11"])],
    format: Literal["json", "csv"] = "json",
) -> Invoices | Response:
    """One line per account: plan, billable requests, base fee, metered amount and total, in
    cents (total = base fee + ceil(billable / 1000 x price per 1000))."""
    lines = service.invoices(session, month)
    if format == "json":
        return Invoices.model_validate({"month": month, "invoices": lines})
    return Response(
        service.invoices_csv(lines),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="invoices-{month}.csv"'},
    )
