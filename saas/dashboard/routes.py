"""The customer's pages: sign-in and sign-out, the usage overview, its CSV, the keys. Each page
translates the request to service calls and their results to a template; every write goes
through the same service function as the API and the CLI."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from saas import problems
from saas.accounts import service as accounts
from saas.dashboard import auth, pages, views
from saas.dashboard.auth import CheckedForm, CurrentVisitor, FormWithToken
from saas.dashboard.pages import Id, Month, field, see_other
from saas.keys import service as keys
from saas.keys.schemas import CustomerKeyCreate, KeyPublic
from saas.kit import months
from saas.kit.db import utcnow
from saas.problems.errors import Forbidden, Invalid, NotFound, validated
from saas.web.deps import DbSession
from saas.web.services import services_of

router = APIRouter(prefix=pages.PREFIX, route_class=pages.PageRoute, include_in_schema=False)


def landing(request: Request, is_admin: bool) -> str:
    return f"{pages.base_path(request)}/{'admin' if is_admin else 'overview'}"


@router.get("")
async def sign_in_form(request: Request) -> Response:
    try:
        visitor = await auth.current_visitor(request)
    except pages.SignedOut:
        return pages.sign_in_page(request, None)
    return see_other(landing(request, visitor.principal.is_admin))


@router.post("")
async def sign_in(request: Request, api_key: Annotated[str, Form()] = "") -> Response:
    if auth.posted_from_another_site(request):
        raise Forbidden("Sign in from this dashboard's own page.", problems.CSRF_FAILED)
    principal, session_id = await auth.sign_in(request, api_key)
    response = see_other(landing(request, principal.is_admin))
    settings = services_of(request).settings
    max_age = int(settings.dashboard_session_hours * 3600)
    pages.set_cookie(request, response, session_id, max_age, settings.dashboard_secure_cookie)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, visitor: CurrentVisitor, form: FormWithToken) -> Response:
    await run_in_threadpool(auth.close, services_of(request).database, visitor.session_id)
    return pages.sign_in_page(request, "You have signed out.")


@router.get("/static/{name:path}")
def static(name: str) -> Response:
    return pages.static_file(name)


@router.get("/overview")
def overview(
    request: Request, visitor: CurrentVisitor, session: DbSession, month: Month = None
) -> Response:
    account = accounts.get_account(session, visitor.principal.account_id)
    today = datetime.now(UTC).date()
    data = views.account_overview(session, account, month or months.current(), today)
    return pages.render(request, "overview.html", visitor=visitor, account=account, **data)


@router.get("/usage.csv")
def usage_csv(visitor: CurrentVisitor, session: DbSession, month: Month = None) -> Response:
    month = month or months.current()
    body = views.usage_csv(session, visitor.principal.account_id, month)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="usage-{month}.csv"'},
    )


def keys_page(
    request: Request, visitor: auth.Visitor, session: DbSession, status: int = 200, **extra: Any
) -> Response:
    listed = KeyPublic.listing(keys.list_keys(session, visitor.principal.account_id))
    return pages.render(request, "keys.html", status, visitor=visitor, keys=listed, **extra)


@router.get("/keys")
def key_list(request: Request, visitor: CurrentVisitor, session: DbSession) -> Response:
    return keys_page(request, visitor, session)


@router.post("/keys")
def create_key(
    request: Request, visitor: CurrentVisitor, form: CheckedForm, session: DbSession
) -> Response:
    try:  # the API's schema (POST /v1/keys): the same rules, the same words
        body = validated(CustomerKeyCreate, {"name": field(form, "name")})
    except Invalid as exc:
        return keys_page(request, visitor, session, status=exc.status_code, message=exc.detail)
    key, plaintext = keys.create_own_key(
        session=session, caller=visitor.principal, actor=visitor.actor, name=body.name
    )
    # The one time this key is shown: the page is sent with Cache-Control: no-store.
    return keys_page(
        request, visitor, session, created=KeyPublic.of(key, utcnow()), secret=plaintext
    )


@router.get("/keys/{key_id}/revoke")
def confirm_revoke(
    request: Request, key_id: Id, visitor: CurrentVisitor, session: DbSession
) -> Response:
    key = keys.get_key(session, key_id, account_id=visitor.principal.account_id)
    return pages.render(
        request,
        "confirm_revoke.html",
        visitor=visitor,
        key=KeyPublic.of(key, utcnow()),
        action=f"{pages.base_path(request)}/keys/{key_id}/revoke",
        back=f"{pages.base_path(request)}/keys",
    )


@router.post("/keys/{key_id}/revoke")
def revoke_key(
    request: Request, key_id: Id, visitor: CurrentVisitor, form: CheckedForm, session: DbSession
) -> Response:
    keys.revoke_own_key(
        session=session, key_id=key_id, caller=visitor.principal, actor=visitor.actor
    )
    return see_other(f"{pages.base_path(request)}/keys")


# Included after every other router (saas/app.py): an unknown /dashboard/... address gets a
# page, with the same headers, rather than the API's JSON 404.
fallback_router = APIRouter(
    prefix=pages.PREFIX, route_class=pages.PageRoute, include_in_schema=False
)


@fallback_router.api_route("/{path:path}", methods=["GET", "POST"])
async def not_found(path: str) -> Response:
    raise NotFound("There is no such page.")
