"""What the admin pages compute: the month's rejection and error rates and top accounts (from the
rollups, like the customer pages), and the plan form's fields as the schemas' input."""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from saas.dashboard import views
from saas.kit.fields import MAX_INT
from saas.problems.errors import Invalid
from saas.usage import service as usage

# The answers the overview counts, in the order it shows them: the customer's rejections and 5xx.
OUTCOMES = (*views.REJECTIONS, "5xx")


def outcome_of(status: int) -> str | None:
    return OUTCOMES[3] if status >= 500 else views.rejection_of(status)


def outcome_rates(by_status: Mapping[int, int]) -> dict[str, Any]:
    """All requests, and per outcome its count and share of them in percent (None without
    requests: no rate rather than a misleading 0%)."""
    total = sum(by_status.values())
    counts = dict.fromkeys(OUTCOMES, 0)
    for status, requests in by_status.items():
        outcome = outcome_of(status)
        if outcome is not None:
            counts[outcome] += requests
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


def month_activity(session: Session, month: str, top: int = 10) -> dict[str, Any]:
    """The month's outcome rates over every account, and its top accounts with their names."""
    first, after = usage.month_bounds(month)
    last = after - timedelta(days=1)
    return {
        "rates": outcome_rates(usage.requests_by_status(session, start=first, end=last)),
        "top_accounts": usage.top_accounts(session, start=first, end=last, limit=top),
    }


# The plans' number columns are 32-bit integers in both databases.

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
        if number.isdecimal() and int(number) > MAX_INT:  # isdigit() lets "²" through
            raise Invalid(f"{name}: must be at most {MAX_INT:,}.")
    models = [part.strip() for part in str(form.get("models") or "").split(",") if part.strip()]
    fields["models"] = None if not models or [m.lower() for m in models] == ["all"] else models
    return fields


def models_text(models: list[str] | None) -> str:
    """A plan's models as the form shows them."""
    return "all" if models is None else ", ".join(models)
