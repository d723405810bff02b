"""Plans and accounts. Each write validates, writes, records its audit entry and announces what
running workers must forget; it only flushes: the caller's session commits once, then publishes
the announced changes (saas/web/deps.py; the CLI: saas/cli/session.py). The admin API, the CLI and
the coming dashboard call these and translate input and output, nothing else."""

import secrets
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from saas import problems
from saas.accounts import webhooks
from saas.accounts.models import Account, AccountStatus, Plan
from saas.accounts.schemas import AccountCreate, AccountUpdate, PlanCreate, PlanRules, PlanUpdate
from saas.audit import service as audit
from saas.auth.key_format import display_url
from saas.auth.principal import Actor
from saas.kit.changes import Change, announce
from saas.problems.errors import Conflict, Invalid, NotFound, describe_errors, validated


def check_models(models: list[str] | None, known_models: Collection[str]) -> None:
    """A plan names models the service runs, at least one; None means all of them."""
    if models is None:
        return
    known = ", ".join(sorted(known_models))
    if not models:
        raise Invalid(f"A plan needs at least one model (or none listed for all): {known}.")
    unknown = sorted(set(models) - set(known_models))
    if unknown:
        raise Invalid(f"Unknown model(s): {', '.join(unknown)}. Known models: {known}.")


# Plans


def plans_naming_unknown_models(
    session: Session, known_models: Collection[str]
) -> dict[str, list[str]]:
    """Plans that name a model the service does not run (it was removed from SAAS_MODELS):
    their customers get 403 for it. Plan name -> those models."""
    return {
        plan.name: unknown
        for plan in list_plans(session)
        if (unknown := sorted(set(plan.models or ()) - set(known_models)))
    }


def plans_breaking_rules(session: Session) -> dict[str, str]:
    """Plans stored before a rule of PlanRules existed and that break it (a rate limit over
    31 days, say): they are served as they are, but must be fixed before any other change to
    them is accepted. Plan name -> why."""
    broken = {}
    for plan in list_plans(session):
        try:
            PlanRules.model_validate(plan.model_dump())
        except ValidationError as exc:
            broken[plan.name] = describe_errors(exc.errors())
    return broken


def get_plan(session: Session, name: str) -> Plan:
    plan = session.exec(select(Plan).where(Plan.name == name)).first()
    if plan is None:
        raise NotFound(f"Plan {name!r} not found.")
    return plan


def list_plans(session: Session) -> list[Plan]:
    return list(session.exec(select(Plan).order_by(col(Plan.id))))


def create_plan(
    *, session: Session, data: PlanCreate, actor: Actor, known_models: Collection[str]
) -> Plan:
    check_models(data.models, known_models)
    if session.exec(select(Plan).where(Plan.name == data.name)).first() is not None:
        raise Conflict(f"Plan {data.name!r} already exists.", problems.NAME_TAKEN)
    plan = Plan.model_validate(data)
    audit.save(
        session,
        plan,
        actor=actor,
        action="plan.create",
        changes=data.model_dump(),
        object_id=plan.name,
    )
    return plan


def update_plan(
    *,
    session: Session,
    name: str,
    changes: PlanUpdate,
    actor: Actor,
    known_models: Collection[str],
) -> Plan:
    """Apply the fields set in `changes`; the result must still be a valid plan. Workers apply
    it within a second (their cached keys carry the plan)."""
    plan = get_plan(session, name)
    sent = changes.model_dump(exclude_unset=True)
    fields = {field: value for field, value in sent.items() if getattr(plan, field) != value}
    if not fields:
        return plan  # nothing changes: nothing to record or announce
    if "models" in fields:
        check_models(fields["models"], known_models)
    validated(PlanRules, {**plan.model_dump(), **fields})
    before = {field: getattr(plan, field) for field in fields}
    for field, value in fields.items():
        setattr(plan, field, value)
    audit.save(
        session,
        plan,
        actor=actor,
        action="plan.update",
        changes={"before": before, "after": fields},
        object_id=plan.name,
    )
    announce(session, Change("plan", _id(plan)))
    return plan


# Accounts


def get_account(session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} not found.")
    return account


def find_account(session: Session, id_or_name: str | int) -> Account:
    """Operators name accounts by id or by name; an all-digit string is tried as an id first."""
    if isinstance(id_or_name, int) or id_or_name.isdigit():
        account = session.get(Account, int(id_or_name))
        if account is not None:
            return account
    account = session.exec(select(Account).where(Account.name == str(id_or_name))).first()
    if account is None:
        raise NotFound(f"Account {id_or_name!r} not found.")
    return account


def plan_of(session: Session, account: Account) -> Plan:
    plan = session.get(Plan, account.plan_id)
    assert plan is not None  # a foreign key
    return plan


def search_accounts(
    session: Session, *, search: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[int, list[tuple[Account, Plan]]]:
    """(total matching, one page of accounts with their plans), by id. `search` matches part of
    the name or e-mail, ignoring case."""
    statement = select(Account, Plan).join(Plan, col(Plan.id) == col(Account.plan_id))
    if search:
        pattern = f"%{search.lower()}%"
        statement = statement.where(
            func.lower(Account.name).like(pattern) | func.lower(Account.email).like(pattern)
        )
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    page = session.exec(statement.order_by(col(Account.id)).offset(offset).limit(limit)).all()
    return total, [(account, plan) for account, plan in page]


def create_account(*, session: Session, data: AccountCreate, actor: Actor) -> Account:
    plan = get_plan(session, data.plan)
    if session.exec(select(Account).where(Account.name == data.name)).first() is not None:
        raise Conflict(f"Account {data.name!r} already exists.", problems.NAME_TAKEN)
    account = Account(name=data.name, email=data.email, plan_id=_id(plan))
    audit.save(session, account, actor=actor, action="account.create", changes=data.model_dump())
    return account


def update_account(
    *, session: Session, account_id: int, changes: AccountUpdate, actor: Actor
) -> Account:
    """Change plan, e-mail or status (suspend, resume); workers apply it within a second."""
    account = get_account(session, account_id)
    current = {
        "plan": plan_of(session, account).name,
        "email": account.email,
        "status": account.status,
    }
    sent = changes.model_dump(exclude_unset=True)
    fields = {field: value for field, value in sent.items() if current[field] != value}
    if not fields:
        return account  # nothing changes: nothing to record or announce
    before: dict[str, Any] = {}
    if "plan" in fields:
        plan = get_plan(session, fields["plan"])
        before["plan"] = current["plan"]
        account.plan_id = _id(plan)
    if "email" in fields:
        before["email"] = account.email
        account.email = fields["email"]
    if "status" in fields:
        before["status"] = account.status
        account.status = AccountStatus(fields["status"]).value
    audit.save(
        session,
        account,
        actor=actor,
        action="account.update",
        changes={"before": before, "after": fields},
    )
    announce(session, Change("account", account_id))
    return account


def set_webhook(
    *,
    session: Session,
    account_id: int,
    url: str | None,
    actor: Actor,
    allow_private: bool = False,
) -> str | None:
    """Point quota alerts at `url` (None removes the webhook), once it is a target alerts may
    go to (webhooks.py; `allow_private`: SAAS_WEBHOOK_ALLOW_PRIVATE). Returns the new signing
    secret, which exists only in this return value's caller's answer: never logged, never
    listed. Resolves the URL's name: blocking, as every service function here."""
    if url is not None:  # first: its name's lookup must not hold a database transaction open
        try:
            webhooks.check_url(url, allow_private=allow_private)
        except webhooks.TargetRefused as exc:
            raise Invalid(str(exc)) from None
    account = get_account(session, account_id)
    before = display_url(account.webhook_url) if account.webhook_url else None
    account.webhook_url = url
    account.webhook_secret = secrets.token_hex(32) if url else None
    audit.save(
        session,
        account,
        actor=actor,
        action="account.webhook",
        changes={
            "before": {"webhook": before},
            "after": {"webhook": display_url(url) if url else None},
        },
    )
    # Cached keys carry whether the account wants alerts.
    announce(session, Change("account", account_id))
    return account.webhook_secret


def _id(row: Plan | Account) -> int:
    assert row.id is not None  # flushed rows have their id
    return row.id
