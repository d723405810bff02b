"""First-run defaults for `make run`: plans, an admin key, and a demo customer with a key.

Idempotent: what exists is reused, and a key is printed only when it is created (it is never
stored in plaintext, so it cannot be shown again)."""

from sqlmodel import Session, select

from saas.accounts import service as accounts
from saas.accounts.models import PlanCreate
from saas.keys import service as keys
from saas.keys.models import ApiKey

DEFAULT_PLANS = (
    PlanCreate(
        name="free",
        rate_limit="5/second;60/minute",
        monthly_quota=10_000,
        max_text_chars=10_000,
        models=["en_core_web_sm"],
    ),
    PlanCreate(name="internal", rate_limit="1000/second", max_text_chars=1_000_000),
)
ADMIN_ACCOUNT = ("admin", "admin@localhost", "internal", ("admin",))
DEMO_ACCOUNT = ("demo", "demo@example.com", "free", ())


def _ensure_account_with_key(
    session: Session, name: str, email: str, plan: str, scopes: tuple[str, ...]
) -> str:
    account = accounts.find_account(session, name)
    if account is None:
        account = accounts.create_account(session, name=name, email=email, plan_name=plan)
    usable = session.exec(
        select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.revoked_at.is_(None))
    ).all()
    existing = [k for k in usable if set(scopes) <= k.scope_set]
    if existing:
        prefix = existing[0].prefix
        return f"{name} key exists ({prefix}...); create another with: saas keys create {name}"
    _, plaintext = keys.create_key(session, account, name="bootstrap", scopes=scopes)
    return f"{name} key (shown once, store it now): {plaintext}"


def ensure_defaults(session: Session) -> list[str]:
    for plan in DEFAULT_PLANS:
        if accounts.get_plan(session, plan.name) is None:
            accounts.create_plan(session, plan)
    return [
        _ensure_account_with_key(session, *ADMIN_ACCOUNT),
        _ensure_account_with_key(session, *DEMO_ACCOUNT),
    ]
