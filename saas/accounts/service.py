"""Plans and accounts. Services only flush; the caller's session commits."""

from typing import Any

from sqlmodel import Session, select

from saas.accounts.models import Account, AccountStatus, Plan, PlanCreate


class Conflict(ValueError):
    """A name that must be unique is taken."""


class Missing(LookupError):
    """The named object does not exist."""


def create_plan(session: Session, data: PlanCreate) -> Plan:
    if get_plan(session, data.name) is not None:
        raise Conflict(f"plan {data.name!r} already exists")
    plan = Plan.model_validate(data)
    session.add(plan)
    session.flush()
    return plan


def get_plan(session: Session, name: str) -> Plan | None:
    return session.exec(select(Plan).where(Plan.name == name)).first()


def list_plans(session: Session) -> list[Plan]:
    return list(session.exec(select(Plan).order_by(Plan.id)))


def create_account(session: Session, *, name: str, email: str, plan_name: str) -> Account:
    plan = get_plan(session, plan_name)
    if plan is None:
        raise Missing(f"plan {plan_name!r} does not exist")
    if session.exec(select(Account).where(Account.name == name)).first() is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(name=name, email=email, plan_id=plan.id)
    session.add(account)
    session.flush()
    return account


def find_account(session: Session, id_or_name: str | int) -> Account | None:
    """Operators name accounts by id or by name; an all-digit string is tried as an id first."""
    if isinstance(id_or_name, int) or id_or_name.isdigit():
        account = session.get(Account, int(id_or_name))
        if account is not None:
            return account
    return session.exec(select(Account).where(Account.name == str(id_or_name))).first()


def list_accounts(session: Session) -> list[Account]:
    return list(session.exec(select(Account).order_by(Account.id)))


def update_plan(session: Session, plan: Plan, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply `changes` (validated as a whole plan; ValueError if not). Returns the old values."""
    PlanCreate.model_validate({**plan.model_dump(), **changes})
    before = {field: getattr(plan, field) for field in changes}
    for field, value in changes.items():
        setattr(plan, field, value)
    session.add(plan)
    session.flush()
    return before


def update_account(session: Session, account: Account, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply any of `plan` (a name), `email`, `status`. Missing if the plan does not exist,
    ValueError for an unknown status. Returns the old values."""
    before: dict[str, Any] = {}
    if "plan" in changes:
        plan = get_plan(session, changes["plan"])
        if plan is None:
            raise Missing(f"plan {changes['plan']!r} does not exist")
        old_plan = session.get(Plan, account.plan_id)
        before["plan"] = old_plan.name if old_plan else None
        account.plan_id = plan.id
    if "email" in changes:
        before["email"] = account.email
        account.email = changes["email"]
    if "status" in changes:
        before["status"] = account.status
        account.status = AccountStatus(changes["status"]).value
    session.add(account)
    session.flush()
    return before
