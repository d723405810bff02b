"""What the dashboard's usage pages show, computed from the hourly rollups (never the raw
events, so a page costs the same whatever the traffic was): series per day for the charts, the
month's usage as CSV, the invoice preview."""

from datetime import date, timedelta
from typing import Any

from sqlmodel import Session

from saas.accounts import service as accounts
from saas.accounts.models import Account
from saas.kit import months
from saas.kit.csv_export import to_csv
from saas.usage import service as usage

CSV_FIELDS = ["day", "endpoint", "requests", "billable_requests", "characters"]
REJECTIONS = ("429 rate limited", "402 quota exceeded", "other 4xx")


def rejection_of(status: int) -> str | None:
    if status == 429:
        return REJECTIONS[0]
    if status == 402:
        return REJECTIONS[1]
    if 400 <= status < 500:
        return REJECTIONS[2]
    return None


def month_days(month: str, today: date) -> list[date]:
    """The month's days, up to today for the current month."""
    first, after = usage.month_bounds(month)
    last = min(after - timedelta(days=1), max(today, first))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def chart(days: list[date], by_label: dict[str, dict[date, int]], y_label: str) -> dict[str, Any]:
    """The JSON a chart block carries (see static/dashboard.js)."""
    return {
        "x": [day.isoformat() for day in days],
        "series": [
            {"label": label, "values": [values.get(day, 0) for day in days]}
            for label, values in by_label.items()
        ],
        "y_label": y_label,
    }


def daily_charts(rows: list[dict[str, Any]], days: list[date]) -> dict[str, dict[str, Any]]:
    """Requests per day by endpoint, and rejected requests per day by reason."""
    requests: dict[str, dict[date, int]] = {}
    rejected: dict[str, dict[date, int]] = {reason: {} for reason in REJECTIONS}
    for row in rows:
        day = date.fromisoformat(row["bucket"])
        per_day = requests.setdefault(row["endpoint"], {})
        per_day[day] = per_day.get(day, 0) + row["requests"]
        reason = rejection_of(row["status"])
        if reason is not None:
            rejected[reason][day] = rejected[reason].get(day, 0) + row["requests"]
    if not requests:  # a month without traffic still shows its (flat) line
        requests["all endpoints"] = {}
    return {
        "requests": chart(days, dict(sorted(requests.items())), "requests"),
        "rejections": chart(days, rejected, "rejected requests"),
    }


def account_overview(session: Session, account: Account, month: str, today: date) -> dict[str, Any]:
    """Everything the customer overview shows for one account and month."""
    assert account.id is not None
    plan = accounts.plan_of(session, account)
    summary = usage.account_month_usage(session, account, plan, month)
    days = month_days(month, today)
    rows = usage.usage_series(session, start=days[0], end=days[-1], account_id=account.id)
    base, metered, total = usage.invoice_amount(plan, summary["billable_requests"])
    quota = plan.monthly_quota
    return {
        "month": month,
        "months": months.since(account.created_at.date(), today),
        "summary": summary,
        "plan": plan,
        "quota": quota,
        # Rounded down: the bar shows 100% only once nothing is left.
        "quota_percent": None
        if not quota
        else min(100, 100 * summary["billable_requests"] // quota),
        "invoice": {"base": base, "metered": metered, "total": total},
        "charts": daily_charts(rows, days),
    }


def usage_csv(session: Session, account_id: int, month: str) -> str:
    """The month's usage per day and endpoint; its billable total is the invoice's quantity
    (both sum the same rollups)."""
    first, after = usage.month_bounds(month)
    rows = usage.usage_series(
        session, start=first, end=after - timedelta(days=1), account_id=account_id
    )
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        line = lines.setdefault(
            (row["bucket"], row["endpoint"]),
            {
                "day": row["bucket"],
                "endpoint": row["endpoint"],
                "requests": 0,
                "billable_requests": 0,
                "characters": 0,
            },
        )
        for field in ("requests", "billable_requests", "characters"):
            line[field] += row[field]
    return to_csv(CSV_FIELDS, (lines[key] for key in sorted(lines)), lineterminator="\n")
