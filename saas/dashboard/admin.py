"""The operators' pages (keys with the 'admin' scope): accounts, one account with its usage and
keys, plans, the audit log, the month's invoices as CSV. Each page parses the form into the same
schema as the admin API, calls the same service (with the visitor's key as the audit log's actor,
via "dashboard") and renders the result; a rejected form comes back with the reason."""

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from saas.accounts import service as accounts
from saas.accounts.models import Plan
from saas.accounts.schemas import AccountUpdate, PlanCreate, PlanUpdate
from saas.audit import service as audit
from saas.audit.schemas import AuditPublic
from saas.dashboard import admin_views, pages, views
from saas.dashboard.auth import AdminVisitor, CheckedForm, Visitor
from saas.dashboard.pages import Id, Month, field, see_other
from saas.keys import service as keys
from saas.keys.models import ApiKey
from saas.keys.schemas import KeyCreate, KeyPublic, KeyRoll
from saas.kit import months
from saas.kit.db import utcnow
from saas.problems.errors import AppError, Conflict, Invalid, NotFound, validated
from saas.usage import service as usage
from saas.web.deps import DbSession, known_models

router = APIRouter(
    prefix=pages.PREFIX + "/admin", route_class=pages.PageRoute, include_in_schema=False
)

ACCOUNTS_PER_PAGE = 25
AUDIT_PER_PAGE = 50
TOP_ACCOUNTS = 10
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
# No NUL: PostgreSQL refuses it in a query's text (a 500 instead of a 422).
Text = Annotated[str | None, Query(max_length=128, pattern="^[^\\x00]*$")]
# What a rejected form shows next to the form instead of an error page.
REJECTED = (Invalid, Conflict)


def admin_url(request: Request, path: str = "", **params: Any) -> str:
    """A URL of these pages; empty parameters are left out."""
    query = urlencode({name: value for name, value in params.items() if value not in (None, "")})
    return f"{pages.base_path(request)}/admin{path}{'?' + query if query else ''}"


def blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


# Accounts


@router.get("")
def account_list(
    request: Request,
    visitor: AdminVisitor,
    session: DbSession,
    q: Text = None,
    page: PageNumber = 1,
) -> Response:
    search = blank_to_none(q)
    total, rows = accounts.search_accounts(
        session, search=search, offset=(page - 1) * ACCOUNTS_PER_PAGE, limit=ACCOUNTS_PER_PAGE
    )
    pages_count = max(1, -(-total // ACCOUNTS_PER_PAGE))
    month = months.current()
    today = datetime.now(UTC).date()
    return pages.render(
        request,
        "admin/accounts.html",
        visitor=visitor,
        q=search or "",
        total=total,
        rows=rows,
        page=page,
        pages_count=pages_count,
        previous_url=admin_url(request, q=search, page=page - 1) if page > 1 else None,
        next_url=admin_url(request, q=search, page=page + 1) if page < pages_count else None,
        month=month,
        months=months.since(date(today.year - 2, today.month, 1), today),
        **admin_views.month_activity(session, month, TOP_ACCOUNTS),
    )


@router.get("/invoices.csv")
def invoices_csv(visitor: AdminVisitor, session: DbSession, month: Month = None) -> Response:
    """The same CSV as GET /admin/invoices?format=csv and `saas invoices`."""
    month = month or months.current()
    return Response(
        usage.invoices_csv(usage.invoices(session, month)),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="invoices-{month}.csv"'},
    )


def account_page(
    request: Request,
    visitor: Visitor,
    session: DbSession,
    account_id: int,
    *,
    month: str | None = None,
    status: int = 200,
    **extra: Any,
) -> Response:
    account = accounts.get_account(session, account_id)
    today = datetime.now(UTC).date()
    data = views.account_overview(session, account, month or months.current(), today)
    listed = KeyPublic.listing(keys.list_keys(session, account_id))
    return pages.render(
        request,
        "admin/account.html",
        status,
        visitor=visitor,
        account=account,
        keys=listed,
        plans=accounts.list_plans(session),
        account_url=admin_url(request, f"/accounts/{account_id}"),
        **data,
        **extra,
    )


def rejected(
    request: Request, visitor: Visitor, session: DbSession, account_id: int, exc: AppError
) -> Response:
    """The account page again, with why the form was refused (nothing was written)."""
    session.rollback()
    return account_page(
        request, visitor, session, account_id, status=exc.status_code, message=exc.detail
    )


def new_key_page(
    request: Request,
    visitor: Visitor,
    session: DbSession,
    account_id: int,
    key: ApiKey,
    plaintext: str,
    **extra: Any,
) -> Response:
    """The account page with a key just made or rolled (`rolled`: the old key's grace period).
    The one time this key is shown: the page is sent with Cache-Control: no-store."""
    created = KeyPublic.of(key, utcnow())
    return account_page(
        request, visitor, session, account_id, created=created, secret=plaintext, **extra
    )


@router.get("/accounts/{account_id}")
def account_detail(
    request: Request,
    account_id: Id,
    visitor: AdminVisitor,
    session: DbSession,
    month: Month = None,
) -> Response:
    return account_page(request, visitor, session, account_id, month=month)


@router.post("/accounts/{account_id}/keys")
def create_key(
    request: Request, account_id: Id, visitor: AdminVisitor, form: CheckedForm, session: DbSession
) -> Response:
    try:
        body = validated(
            KeyCreate,
            {"name": field(form, "name"), "scopes": ["admin"] if form.get("admin") else []},
        )
        key, plaintext = keys.create_key(
            session=session,
            account_id=account_id,
            actor=visitor.actor,
            name=body.name,
            scopes=body.scopes,
            caller=visitor.principal,
        )
    except REJECTED as exc:
        return rejected(request, visitor, session, account_id, exc)
    return new_key_page(request, visitor, session, account_id, key, plaintext)


@router.get("/accounts/{account_id}/keys/{key_id}/revoke")
def confirm_revoke(
    request: Request, account_id: Id, key_id: Id, visitor: AdminVisitor, session: DbSession
) -> Response:
    key = keys.get_key(session, key_id, account_id=account_id)
    back = admin_url(request, f"/accounts/{account_id}")
    return pages.render(
        request,
        "confirm_revoke.html",
        visitor=visitor,
        nav="admin",
        key=KeyPublic.of(key, utcnow()),
        action=f"{back}/keys/{key_id}/revoke",
        back=back,
    )


@router.post("/accounts/{account_id}/keys/{key_id}/revoke")
def revoke_key(
    request: Request,
    account_id: Id,
    key_id: Id,
    visitor: AdminVisitor,
    form: CheckedForm,
    session: DbSession,
) -> Response:
    keys.revoke_key(
        session=session,
        key_id=key_id,
        actor=visitor.actor,
        account_id=account_id,
        caller=visitor.principal,
    )
    return see_other(admin_url(request, f"/accounts/{account_id}"))


@router.post("/accounts/{account_id}/keys/{key_id}/roll")
def roll_key(
    request: Request,
    account_id: Id,
    key_id: Id,
    visitor: AdminVisitor,
    form: CheckedForm,
    session: DbSession,
) -> Response:
    keys.get_key(session, key_id, account_id=account_id)  # 404 for another account's key
    grace = field(form, "grace_seconds")
    try:
        body = validated(KeyRoll, {"grace_seconds": grace} if grace else {})
        key, plaintext = keys.roll_key(
            session=session,
            key_id=key_id,
            grace_seconds=body.grace_seconds,
            actor=visitor.actor,
            caller=visitor.principal,
        )
    except REJECTED as exc:
        return rejected(request, visitor, session, account_id, exc)
    return new_key_page(
        request, visitor, session, account_id, key, plaintext, rolled=body.grace_seconds
    )


def change_account(
    request: Request,
    visitor: Visitor,
    session: DbSession,
    account_id: int,
    changes: dict[str, str],
) -> Response:
    accounts.get_account(session, account_id)  # 404 before anything else
    try:
        update = validated(AccountUpdate, changes)
        try:
            accounts.update_account(
                session=session, account_id=account_id, changes=update, actor=visitor.actor
            )
        except NotFound as exc:  # the plan named in the form
            raise Invalid(exc.detail) from None
    except REJECTED as exc:
        return rejected(request, visitor, session, account_id, exc)
    return see_other(admin_url(request, f"/accounts/{account_id}"))


@router.post("/accounts/{account_id}/plan")
def change_plan(
    request: Request, account_id: Id, visitor: AdminVisitor, form: CheckedForm, session: DbSession
) -> Response:
    return change_account(request, visitor, session, account_id, {"plan": field(form, "plan")})


@router.post("/accounts/{account_id}/status")
def change_status(
    request: Request, account_id: Id, visitor: AdminVisitor, form: CheckedForm, session: DbSession
) -> Response:
    """Suspend (every key is refused within a second) or reactivate."""
    return change_account(request, visitor, session, account_id, {"status": field(form, "status")})


# Plans


def plan_values(plan: Plan) -> dict[str, str]:
    """A plan as the form's field values."""
    return {
        "name": plan.name,
        "rate_limit": plan.rate_limit,
        "monthly_quota": "" if plan.monthly_quota is None else str(plan.monthly_quota),
        "models": admin_views.models_text(plan.models),
        **{name: str(getattr(plan, name)) for name in admin_views.PLAN_INT_FIELDS},
    }


def plans_page(
    request: Request,
    visitor: Visitor,
    session: DbSession,
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    message: str | None = None,
) -> Response:
    defaults = plan_values(Plan(name="", rate_limit="60/minute"))
    return pages.render(
        request,
        "admin/plans.html",
        status,
        visitor=visitor,
        plans=accounts.list_plans(session),
        models_text=admin_views.models_text,
        known=sorted(known_models(request)),
        values=values or defaults,
        message=message,
    )


@router.get("/plans")
def plan_list(request: Request, visitor: AdminVisitor, session: DbSession) -> Response:
    return plans_page(request, visitor, session)


@router.post("/plans")
def create_plan(
    request: Request, visitor: AdminVisitor, form: CheckedForm, session: DbSession
) -> Response:
    try:
        data = validated(PlanCreate, admin_views.plan_fields(form, with_name=True))
        accounts.create_plan(
            session=session, data=data, actor=visitor.actor, known_models=known_models(request)
        )
    except REJECTED as exc:
        session.rollback()
        values = {name: field(form, name) for name in plan_values(Plan(name=""))}
        return plans_page(
            request, visitor, session, status=exc.status_code, values=values, message=exc.detail
        )
    return see_other(admin_url(request, "/plans"))


def plan_page(
    request: Request,
    visitor: Visitor,
    plan: Plan,
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    message: str | None = None,
    saved: bool = False,
) -> Response:
    return pages.render(
        request,
        "admin/plan.html",
        status,
        visitor=visitor,
        plan=plan,
        known=sorted(known_models(request)),
        values=values or plan_values(plan),
        message=message,
        saved=saved,
    )


@router.get("/plans/{name}")
def edit_plan(
    request: Request, name: str, visitor: AdminVisitor, session: DbSession, saved: bool = False
) -> Response:
    return plan_page(request, visitor, accounts.get_plan(session, name), saved=saved)


@router.post("/plans/{name}")
def update_plan(
    request: Request, name: str, visitor: AdminVisitor, form: CheckedForm, session: DbSession
) -> Response:
    plan = accounts.get_plan(session, name)
    try:
        changes = validated(PlanUpdate, admin_views.plan_fields(form, with_name=False))
        accounts.update_plan(
            session=session,
            name=name,
            changes=changes,
            actor=visitor.actor,
            known_models=known_models(request),
        )
    except REJECTED as exc:
        session.rollback()
        values = {field_name: field(form, field_name) for field_name in plan_values(plan)}
        plan = accounts.get_plan(session, name)
        return plan_page(
            request, visitor, plan, status=exc.status_code, values=values, message=exc.detail
        )
    return see_other(admin_url(request, f"/plans/{quote(name, safe='')}", saved="1"))


# The audit log


@router.get("/audit")
def audit_log(
    request: Request,
    visitor: AdminVisitor,
    session: DbSession,
    action: Text = None,
    object_type: Text = None,
    object_id: Text = None,
    via: Text = None,
    page: PageNumber = 1,
) -> Response:
    filters = {
        "action": blank_to_none(action),
        "object_type": blank_to_none(object_type),
        "object_id": blank_to_none(object_id),
        "via": blank_to_none(via),
    }
    found = audit.search(
        session,
        action=filters["action"],
        object_type=filters["object_type"],
        object_id=filters["object_id"],
        via=filters["via"],
        limit=AUDIT_PER_PAGE + 1,
        offset=(page - 1) * AUDIT_PER_PAGE,
    )
    has_next = len(found) > AUDIT_PER_PAGE
    return pages.render(
        request,
        "admin/audit.html",
        visitor=visitor,
        entries=[AuditPublic.of(entry) for entry in found[:AUDIT_PER_PAGE]],
        filters={name: value or "" for name, value in filters.items()},
        page=page,
        previous_url=admin_url(request, "/audit", **filters, page=page - 1) if page > 1 else None,
        next_url=admin_url(request, "/audit", **filters, page=page + 1) if has_next else None,
    )
