"""Usage queries for dashboards, invoices and reconciliation. All of them read the rollups, which
are kept for every month, except the reconciliation, which also counts the raw events (kept for
SAAS_USAGE_RETENTION_MONTHS on PostgreSQL)."""

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as select_columns  # any number of columns (SQLModel's: up to 4)
from sqlmodel import Session, col, select

from saas.accounts.models import Account, Plan
from saas.kit import months
from saas.kit.csv_export import to_csv
from saas.problems.errors import Invalid
from saas.ratelimit.windows import parse_windows
from saas.usage.models import UsageEvent, UsageRollup


def month_bounds(month: str) -> tuple[date, date]:
    """The month's first day and the first day after (saas/kit/months.py), or Invalid (422)."""
    try:
        return months.bounds(month)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def rollup_billable_units(session: Session, account_id: int, month: str) -> int:
    first, after = month_bounds(month)
    total = session.exec(
        select(func.coalesce(func.sum(UsageRollup.billable_units), 0)).where(
            UsageRollup.account_id == account_id,
            UsageRollup.day >= first,
            UsageRollup.day < after,
        )
    ).one()
    return int(total)


def month_billable_units(engine: Engine, account_id: int, month: str) -> int:
    with Session(engine) as session:
        return rollup_billable_units(session, account_id, month)


def _totals(rows: list[Any]) -> dict[str, int]:
    return {
        "requests": sum(int(r.requests) for r in rows),
        "billable_requests": sum(int(r.billable_units) for r in rows),
        "characters": sum(int(r.chars) for r in rows),
    }


def _sums() -> tuple[Any, Any, Any]:
    return (
        func.sum(UsageRollup.requests).label("requests"),
        func.sum(UsageRollup.billable_units).label("billable_units"),
        func.sum(UsageRollup.chars).label("chars"),
    )


def account_month_usage(
    session: Session, account: Account, plan: Plan, month: str
) -> dict[str, Any]:
    """What GET /v1/usage, `saas usage` and the dashboard show: the month's totals, by endpoint
    and by day, the plan's limits and what remains. Summed per day and endpoint in the
    database: a busy month is thousands of hourly rows but a few hundred of these."""
    first, after = month_bounds(month)
    rows = list(
        session.connection().execute(
            select_columns(col(UsageRollup.day), col(UsageRollup.endpoint), *_sums())
            .where(
                col(UsageRollup.account_id) == account.id,
                col(UsageRollup.day) >= first,
                col(UsageRollup.day) < after,
            )
            .group_by(col(UsageRollup.day), col(UsageRollup.endpoint))
        )
    )
    by_endpoint: dict[str, list[Any]] = {}
    by_day: dict[date, list[Any]] = {}
    for row in rows:
        by_endpoint.setdefault(row.endpoint, []).append(row)
        by_day.setdefault(row.day, []).append(row)
    totals = _totals(rows)
    quota = plan.monthly_quota
    return {
        "account": account.name,
        "month": month,
        **totals,
        "by_endpoint": [
            {"endpoint": name, **_totals(group)} for name, group in sorted(by_endpoint.items())
        ],
        "by_day": [
            {"day": day.isoformat(), **_totals(group)} for day, group in sorted(by_day.items())
        ],
        "plan": {
            "name": plan.name,
            "rate_limit": plan.rate_limit,
            "windows": [
                {"name": w.name, "limit": w.limit, "seconds": w.seconds}
                for w in parse_windows(plan.rate_limit)
            ],
            "monthly_quota": quota,
            "max_text_chars": plan.max_text_chars,
            "max_batch_texts": plan.max_batch_texts,
            "models": plan.models,
        },
        "remaining_quota": None if quota is None else max(0, quota - totals["billable_requests"]),
    }


def usage_series(
    session: Session,
    *,
    start: date,
    end: date,
    granularity: str = "day",
    account_id: int | None = None,
    endpoint: str | None = None,
    status: int | None = None,
) -> list[dict[str, Any]]:
    """Rollups between `start` and `end` (inclusive days), per bucket, account, endpoint, status,
    summed in the database (per day, the hours are added up there)."""
    keys: list[Any] = [col(UsageRollup.day)]
    if granularity == "hour":
        keys.append(col(UsageRollup.hour))
    keys += [col(UsageRollup.account_id), col(UsageRollup.endpoint), col(UsageRollup.status)]
    statement = (
        select_columns(*keys, *_sums())
        .where(col(UsageRollup.day) >= start, col(UsageRollup.day) <= end)
        .group_by(*keys)
    )
    if account_id is not None:
        statement = statement.where(col(UsageRollup.account_id) == account_id)
    if endpoint is not None:
        statement = statement.where(col(UsageRollup.endpoint) == endpoint)
    if status is not None:
        statement = statement.where(col(UsageRollup.status) == status)
    series = []
    for row in session.connection().execute(statement):
        if granularity == "hour":
            bucket = datetime(row.day.year, row.day.month, row.day.day, row.hour, tzinfo=UTC)
            label = bucket.isoformat()
        else:
            label = row.day.isoformat()
        series.append(
            {
                "bucket": label,
                "account_id": row.account_id,
                "endpoint": row.endpoint,
                "status": row.status,
                "requests": int(row.requests),
                "billable_requests": int(row.billable_units),
                "characters": int(row.chars),
            }
        )
    # Sorted here, not by the database: its collation would order the endpoints its own way.
    series.sort(
        key=lambda entry: (entry["bucket"], entry["account_id"], entry["endpoint"], entry["status"])
    )
    return series


def requests_by_status(session: Session, *, start: date, end: date) -> dict[int, int]:
    """Requests per answer status over every account, `start` to `end` (inclusive days)."""
    rows = session.connection().execute(
        select_columns(col(UsageRollup.status), func.sum(UsageRollup.requests))
        .where(col(UsageRollup.day) >= start, col(UsageRollup.day) <= end)
        .group_by(col(UsageRollup.status))
    )
    return {int(status): int(requests) for status, requests in rows}


def top_accounts(session: Session, *, start: date, end: date, limit: int) -> list[dict[str, Any]]:
    """The `limit` accounts with the most billable requests from `start` to `end` (ties: more
    requests, then the lower id), accounts that billed nothing left out; ranked by the
    database, so the cost does not grow with the number of accounts."""
    billable = func.sum(UsageRollup.billable_units)
    requests = func.sum(UsageRollup.requests)
    rows = session.connection().execute(
        select_columns(col(Account.id), col(Account.name), col(Account.email), billable, requests)
        .select_from(UsageRollup)
        .join(Account, col(Account.id) == col(UsageRollup.account_id))
        .where(col(UsageRollup.day) >= start, col(UsageRollup.day) <= end)
        .group_by(col(Account.id), col(Account.name), col(Account.email))
        .having(billable > 0)
        .order_by(billable.desc(), requests.desc(), col(Account.id))
        .limit(limit)
    )
    return [
        {
            "account_id": account_id,
            "name": name,
            "email": email,
            "billable_requests": int(billed),
            "requests": int(answered),
        }
        for account_id, name, email, billed, answered in rows
    ]


def invoice_amount(plan: Plan, billable: int) -> tuple[int, int, int]:
    """(base fee, metered amount, total) in cents: base + ceil(billable / 1000 x price)."""
    metered = -(-billable * plan.price_cents_per_1000_requests // 1000)  # integer ceil
    return plan.price_cents_per_month, metered, plan.price_cents_per_month + metered


def invoices(session: Session, month: str) -> list[dict[str, Any]]:
    first, after = month_bounds(month)
    billed = dict(
        session.exec(
            select(UsageRollup.account_id, func.sum(UsageRollup.billable_units))
            .where(UsageRollup.day >= first, UsageRollup.day < after)
            .group_by(col(UsageRollup.account_id))
        ).all()
    )
    lines = []
    for account, plan in session.exec(
        select(Account, Plan)
        .join(Plan, col(Plan.id) == col(Account.plan_id))
        .order_by(col(Account.id))
    ):
        billable = int(billed.get(account.id or 0, 0))
        base, metered, total = invoice_amount(plan, billable)
        lines.append(
            {
                "month": month,
                "account_id": account.id,
                "account": account.name,
                "plan": plan.name,
                "billable_requests": billable,
                "base_fee_cents": base,
                "metered_cents": metered,
                "total_cents": total,
            }
        )
    return lines


def reconcile(session: Session, account_id: int, month: str) -> dict[str, int]:
    """Billable quantity three ways; they must be equal: raw events, rollups, invoice. Only for
    a month whose raw events are kept: on PostgreSQL, months older than
    SAAS_USAGE_RETENTION_MONTHS have been dropped (see usage/partitions.py), so `events` is 0
    there while rollups and invoice still agree."""
    first, after = month_bounds(month)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(after.year, after.month, after.day, tzinfo=UTC)
    events = session.exec(
        select(func.coalesce(func.sum(UsageEvent.units), 0)).where(
            UsageEvent.account_id == account_id,
            col(UsageEvent.billable).is_(True),
            UsageEvent.occurred_at >= start,
            UsageEvent.occurred_at < end,
        )
    ).one()
    rollups = rollup_billable_units(session, account_id, month)
    invoice = next(
        (
            line["billable_requests"]
            for line in invoices(session, month)
            if line["account_id"] == account_id
        ),
        0,
    )
    return {"events": int(events), "rollups": int(rollups), "invoice": int(invoice)}


INVOICE_CSV_FIELDS = [
    "month",
    "account_id",
    "account",
    "plan",
    "billable_requests",
    "base_fee_cents",
    "metered_cents",
    "total_cents",
]


def invoices_csv(lines: list[dict[str, Any]]) -> str:
    return to_csv(INVOICE_CSV_FIELDS, lines)
