"""Admin routes for plans and accounts (the auth middleware checks the `admin` scope for all of
/admin). Each one translates HTTP to a service call and its result to a public schema."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from saas.accounts import service
from saas.accounts.schemas import (
    AccountCreate,
    AccountPage,
    AccountPublic,
    AccountUpdate,
    PlanCreate,
    PlanPublic,
    PlanUpdate,
    WebhookCreated,
    WebhookSet,
)
from saas.kit.fields import Id, Offset, Stored
from saas.web.context import ADMIN_PREFIX
from saas.web.deps import DbSession, RequestActor, known_models
from saas.web.openapi import ADMIN, BODY, errors
from saas.web.services import services_of

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin: plans and accounts"], responses=ADMIN)
_PLAN_NOT_FOUND = errors({404: "No such plan"})
_ACCOUNT_NOT_FOUND = errors({404: "No such account"})
# A unique name taken, also by a write made at the same time.
_NAME_TAKEN = errors({409: "The name is taken"})


@router.post(
    "/plans",
    status_code=status.HTTP_201_CREATED,
    response_model=PlanPublic,
    responses={**BODY, **_NAME_TAKEN},
)
def create_plan(
    body: PlanCreate, request: Request, session: DbSession, actor: RequestActor
) -> PlanPublic:
    """A new plan; `models` must name models the service runs (omit it for all)."""
    plan = service.create_plan(
        session=session, data=body, actor=actor, known_models=known_models(request)
    )
    return PlanPublic.of(plan)


@router.get("/plans", response_model=list[PlanPublic])
def list_plans(session: DbSession) -> list[PlanPublic]:
    return [PlanPublic.of(plan) for plan in service.list_plans(session)]


@router.get("/plans/{name}", response_model=PlanPublic, responses=_PLAN_NOT_FOUND)
def get_plan(name: Stored, session: DbSession) -> PlanPublic:
    return PlanPublic.of(service.get_plan(session, name))


@router.patch("/plans/{name}", response_model=PlanPublic, responses={**BODY, **_PLAN_NOT_FOUND})
def update_plan(
    name: Stored, body: PlanUpdate, request: Request, session: DbSession, actor: RequestActor
) -> PlanPublic:
    """Change limits, models or prices; every worker applies it within a second."""
    plan = service.update_plan(
        session=session, name=name, changes=body, actor=actor, known_models=known_models(request)
    )
    return PlanPublic.of(plan)


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountPublic,
    responses={**BODY, **_PLAN_NOT_FOUND, **_NAME_TAKEN},
)
def create_account(body: AccountCreate, session: DbSession, actor: RequestActor) -> AccountPublic:
    account = service.create_account(session=session, data=body, actor=actor)
    return AccountPublic.of(account, service.plan_of(session, account))


@router.get("/accounts", response_model=AccountPage)
def list_accounts(
    session: DbSession,
    q: Annotated[Stored | None, Query(description="Part of the name or e-mail.")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AccountPage:
    total, page = service.search_accounts(session, search=q, offset=offset, limit=limit)
    return AccountPage(
        total=total,
        offset=offset,
        limit=limit,
        accounts=[AccountPublic.of(account, plan) for account, plan in page],
    )


@router.get("/accounts/{account_id}", response_model=AccountPublic, responses=_ACCOUNT_NOT_FOUND)
def get_account(account_id: Id, session: DbSession) -> AccountPublic:
    account = service.get_account(session, account_id)
    return AccountPublic.of(account, service.plan_of(session, account))


@router.patch(
    "/accounts/{account_id}",
    response_model=AccountPublic,
    responses={**BODY, **errors({404: "No such account or plan"})},
)
def update_account(
    account_id: Id, body: AccountUpdate, session: DbSession, actor: RequestActor
) -> AccountPublic:
    """Change plan or e-mail, suspend or resume; every worker applies it within a second."""
    account = service.update_account(
        session=session, account_id=account_id, changes=body, actor=actor
    )
    return AccountPublic.of(account, service.plan_of(session, account))


@router.put(
    "/accounts/{account_id}/webhook",
    response_model=WebhookCreated,
    responses={**BODY, **_ACCOUNT_NOT_FOUND},
)
def set_webhook(
    account_id: Id, body: WebhookSet, request: Request, session: DbSession, actor: RequestActor
) -> WebhookCreated:
    """Where quota alerts go: not to loopback, private, link-local, multicast or unspecified
    addresses (private and loopback ones where the deployment allows them), nor to a URL with a
    user name or password. The signing secret is in this answer only."""
    url = str(body.url) if body.url is not None else None
    secret = service.set_webhook(
        session=session,
        account_id=account_id,
        url=url,
        actor=actor,
        allow_private=services_of(request).settings.webhook_allow_private,
    )
    return WebhookCreated(url=url, secret=secret)
