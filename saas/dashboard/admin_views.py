"""What the admin pages compute: the month's rejection and error rates and top accounts (from the
rollups, like the customer pages), and the plan form's fields as the schemas' input."""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from saas.accounts import service as accounts
from saas.errors import Invalid, NotFound
from saas.usage import service as usage

# The answers the overview counts, in the order it shows them.
OUTCOMES = ("429 rate limited", "402 quota exceeded", "other 4xx", "5xx")


def outcome_of(status: int) -> str | None:
    if status == 429:
        return OUTCOMES[0]
    if status == 402:
        return OUTCOMES[1]
    if 400 <= status < 500:
        return OUTCOMES[2]
    if status >= 500:
        return OUTCOMES[3]
    return None


def outcome_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """All requests, and per outcome its count and share of them in percent (None without
    requests: no rate rather than a misleading 0%)."""
    total = sum(row["requests"] for row in rows)
    counts = dict.fromkeys(OUTCOMES, 0)
    for row in rows:
        outcome = outcome_of(row["status"])
        if outcome is not None:
            counts[outcome] += row["requests"]
    return {
        "requests": total,
        "outcomes": [
            {
                "label": label,
                "requests": count,
                "percent": round(100 * count / total, 2) if total else None,
            }
            for label, count in counts.items()
        ],
    }


def rank_accounts(rows: list[dict[str, Any]], limit: int) -> list[dict[str, int]]:
    """The `limit` accounts with the most billable requests (ties: more requests, then the
    lower id), leaving out accounts that billed nothing."""
    totals: dict[int, dict[str, int]] = {}
    for row in rows:
        entry = totals.setdefault(
            row["account_id"],
            {"account_id": row["account_id"], "billable_requests": 0, "requests": 0},
        )
        entry["billable_requests"] += row["billable_requests"]
        entry["requests"] += row["requests"]
    ranked = sorted(
        (entry for entry in totals.values() if entry["billable_requests"] > 0),
        key=lambda e: (-e["billable_requests"], -e["requests"], e["account_id"]),
    )
    return ranked[:limit]


def month_activity(session: Session, month: str, top: int = 10) -> dict[str, Any]:
    """The month's outcome rates over every account, and its top accounts with their names."""
    first, after = usage.month_bounds(month)
    rows = usage.usage_series(session, start=first, end=after - timedelta(days=1))
    leaders = []
    for entry in rank_accounts(rows, top):
        try:
            account = accounts.get_account(session, entry["account_id"])
        except NotFound:  # rollups outlive nothing today, but a listing must not fail
            continue
        leaders.append({**entry, "name": account.name, "email": account.email})
    return {"rates": outcome_rates(rows), "top_accounts": leaders}


# The plans' number columns are 32-bit integers in both databases.
LARGEST_INT = 2**31 - 1

PLAN_INT_FIELDS = (
    "max_text_chars",
    "price_cents_per_month",
    "price_cents_per_1000_requests",
    "max_keys",
    "max_batch_texts",
)


def plan_fields(form: Mapping[str, Any], *, with_name: bool) -> dict[str, Any]:
    """The plan form as PlanCreate/PlanUpdate input. A blank number is left out (its default,
    or unchanged); a blank monthly quota means none; models are comma-separated names, and
    "all" or blank means every model. The schemas validate the rest."""
    fields: dict[str, Any] = {}
    if with_name:
        fields["name"] = str(form.get("name") or "").strip()
    rate_limit = str(form.get("rate_limit") or "").strip()
    if rate_limit:
        fields["rate_limit"] = rate_limit
    quota = str(form.get("monthly_quota") or "").strip()
    fields["monthly_quota"] = quota.replace(",", "").replace("_", "") or None
    for name in PLAN_INT_FIELDS:
        value = str(form.get(name) or "").strip().replace(",", "").replace("_", "")
        if value:
            fields[name] = value
    for name in ("monthly_quota", *PLAN_INT_FIELDS):
        number = str(fields.get(name) or "")
        if number.isdigit() and int(number) > LARGEST_INT:
            raise Invalid(f"{name}: must be at most {LARGEST_INT:,}.")
    models = [part.strip() for part in str(form.get("models") or "").split(",") if part.strip()]
    fields["models"] = None if not models or [m.lower() for m in models] == ["all"] else models
    return fields


def models_text(models: list[str] | None) -> str:
    """A plan's models as the form shows them."""
    return "all" if models is None else ", ".join(models)
