"""Admin routes for plans and accounts (the `admin` scope is checked by the auth middleware for
all of /admin). Changes that affect requests in flight are published to every worker."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, EmailStr, Field
from sqlmodel import Session, col, func, select

from saas.accounts import service
from saas.accounts.models import Account, Plan, PlanBase, PlanCreate
from saas.audit import service as audit
from saas.db import as_utc, get_session
from saas.errors import AppError, NotFound
from saas.keys.routes import invalidate

router = APIRouter(prefix="/admin", tags=["admin: plans and accounts"])
DbSession = Annotated[Session, Depends(get_session)]


class PlanPublic(PlanBase):
    id: int


class PlanUpdate(BaseModel):
    rate_limit: str | None = Field(default=None, examples=["10/second;600/minute"])
    monthly_quota: int | None = Field(default=None, ge=0)
    max_text_chars: int | None = Field(default=None, ge=1)
    models: list[str] | None = None
    price_cents_per_month: int | None = Field(default=None, ge=0)
    price_cents_per_1000_requests: int | None = Field(default=None, ge=0)
    max_keys: int | None = Field(default=None, ge=0)
    max_batch_texts: int | None = Field(default=None, ge=1)


class AccountCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128, examples=["acme"])
    email: EmailStr = Field(examples=["ops@acme.example"])
    plan: str = Field(examples=["free"])


class AccountUpdate(BaseModel):
    email: EmailStr | None = None
    plan: str | None = None
    status: Literal["active", "suspended"] | None = None


class AccountPublic(BaseModel):
    id: int
    name: str
    email: str
    plan: str
    status: str
    created_at: datetime


class AccountPage(BaseModel):
    total: int
    offset: int
    limit: int
    accounts: list[AccountPublic]


def plan_public(plan: Plan) -> PlanPublic:
    return PlanPublic.model_validate(plan, from_attributes=True)


def account_public(session: Session, account: Account) -> AccountPublic:
    plan = session.get(Plan, account.plan_id)
    return AccountPublic(
        id=account.id,
        name=account.name,
        email=account.email,
        plan=plan.name if plan else "",
        status=account.status,
        created_at=as_utc(account.created_at),
    )


def _plan_or_404(session: Session, name: str) -> Plan:
    plan = service.get_plan(session, name)
    if plan is None:
        raise NotFound(f"Plan {name!r} not found.")
    return plan


@router.post("/plans", status_code=status.HTTP_201_CREATED, response_model=PlanPublic)
def create_plan(body: PlanCreate, request: Request, session: DbSession) -> PlanPublic:
    try:
        plan = service.create_plan(session, body)
    except service.Conflict as exc:
        raise AppError(str(exc), status_code=409) from None
    audit.record(
        session, request.state.principal, "plan.create", "plan", plan.name, body.model_dump()
    )
    return plan_public(plan)


@router.get("/plans", response_model=list[PlanPublic])
def list_plans(session: DbSession) -> list[PlanPublic]:
    return [plan_public(plan) for plan in service.list_plans(session)]


@router.get("/plans/{name}", response_model=PlanPublic)
def get_plan(name: str, session: DbSession) -> PlanPublic:
    return plan_public(_plan_or_404(session, name))


@router.patch("/plans/{name}", response_model=PlanPublic)
def update_plan(name: str, body: PlanUpdate, request: Request, session: DbSession) -> PlanPublic:
    """Change limits, models or prices; every worker applies it within a second."""
    plan = _plan_or_404(session, name)
    changes = body.model_dump(exclude_unset=True)
    try:
        before = service.update_plan(session, plan, changes)
    except ValueError as exc:
        raise AppError(str(exc), status_code=422) from None
    audit.record(
        session,
        request.state.principal,
        "plan.update",
        "plan",
        plan.name,
        {"before": before, "after": changes},
    )
    session.commit()
    invalidate(request, "plan", plan.id)
    return plan_public(plan)


@router.post("/accounts", status_code=status.HTTP_201_CREATED, response_model=AccountPublic)
def create_account(body: AccountCreate, request: Request, session: DbSession) -> AccountPublic:
    try:
        account = service.create_account(
            session, name=body.name, email=body.email, plan_name=body.plan
        )
    except service.Missing as exc:
        raise AppError(str(exc), status_code=422) from None
    except service.Conflict as exc:
        raise AppError(str(exc), status_code=409) from None
    audit.record(
        session, request.state.principal, "account.create", "account", account.id, body.model_dump()
    )
    return account_public(session, account)


@router.get("/accounts", response_model=AccountPage)
def list_accounts(
    session: DbSession,
    q: Annotated[str | None, Query(description="Part of the name or e-mail.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AccountPage:
    statement = select(Account)
    if q:
        pattern = f"%{q.lower()}%"
        statement = statement.where(
            func.lower(Account.name).like(pattern) | func.lower(Account.email).like(pattern)
        )
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    page = session.exec(statement.order_by(col(Account.id)).offset(offset).limit(limit)).all()
    return AccountPage(
        total=total,
        offset=offset,
        limit=limit,
        accounts=[account_public(session, account) for account in page],
    )


@router.get("/accounts/{account_id}", response_model=AccountPublic)
def get_account(account_id: int, session: DbSession) -> AccountPublic:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} not found.")
    return account_public(session, account)


@router.patch("/accounts/{account_id}", response_model=AccountPublic)
def update_account(
    account_id: int, body: AccountUpdate, request: Request, session: DbSession
) -> AccountPublic:
    """Change plan or e-mail, suspend or resume; every worker applies it within a second."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} not found.")
    changes = body.model_dump(exclude_unset=True)
    try:
        before = service.update_account(session, account, changes)
    except service.Missing as exc:
        raise NotFound(str(exc)) from None
    audit.record(
        session,
        request.state.principal,
        "account.update",
        "account",
        account.id,
        {"before": before, "after": changes},
    )
    session.commit()
    invalidate(request, "account", account.id)
    return account_public(session, account)
