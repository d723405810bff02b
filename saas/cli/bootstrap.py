"""First-run defaults for `make run`: plans, an admin key, and a demo customer with a key.

Idempotent: what exists is reused, and a key is printed only when it is created (it is never
stored in plaintext, so it cannot be shown again). Writes go through the same service functions
as the admin API and the CLI, so they are audited, with the actor who ran it."""

from collections.abc import Collection

from sqlmodel import Session, select

from saas.accounts import service as accounts
from saas.accounts.models import Account
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.auth.principal import ADMIN_SCOPE, Actor
from saas.keys import service as keys
from saas.keys.models import ApiKey
from saas.kit.db import utcnow

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
ADMIN_ACCOUNT = AccountCreate(name="admin", email="admin@example.com", plan="internal")
DEMO_ACCOUNT = AccountCreate(name="demo", email="demo@example.com", plan="free")


def _ensure_account_with_key(
    session: Session, data: AccountCreate, scopes: tuple[str, ...], actor: Actor
) -> str:
    account = session.exec(select(Account).where(Account.name == data.name)).first()
    if account is None:
        account = accounts.create_account(session=session, data=data, actor=actor)
    assert account.id is not None
    now = utcnow()
    existing = [
        key
        for key in session.exec(select(ApiKey).where(ApiKey.account_id == account.id))
        if key.status(now).usable and set(scopes) <= key.scope_set
    ]
    if existing:
        prefix, name = existing[0].prefix, data.name
        return f"{name} key exists ({prefix}...); create another with: saas keys create {name}"
    _, plaintext = keys.create_key(
        session=session, account_id=account.id, actor=actor, name="bootstrap", scopes=scopes
    )
    return f"{data.name} key (shown once, store it now): {plaintext}"


def ensure_defaults(session: Session, known_models: Collection[str], actor: Actor) -> list[str]:
    existing = {plan.name for plan in accounts.list_plans(session)}
    for plan in DEFAULT_PLANS:
        if plan.name not in existing:
            # The demo plan names the default English model; a deployment without it gets all.
            models = plan.models if set(plan.models or ()) <= set(known_models) else None
            accounts.create_plan(
                session=session,
                data=plan.model_copy(update={"models": models}),
                actor=actor,
                known_models=known_models,
            )
    return [
        _ensure_account_with_key(session, ADMIN_ACCOUNT, (ADMIN_SCOPE,), actor),
        _ensure_account_with_key(session, DEMO_ACCOUNT, (), actor),
    ]
