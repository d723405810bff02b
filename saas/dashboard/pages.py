"""What every dashboard page shares: the templates, the static files, the security headers, and
the route class that turns errors into pages (the API's handlers answer JSON)."""

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Path as PathParameter
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from saas.kit import months
from saas.kit.assets import Assets
from saas.kit.fields import MAX_INT
from saas.problems.errors import AppError, describe_errors

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
PREFIX = "/dashboard"

# No inline script or style anywhere: the charts' data travel in <script type="application/json">
# blocks, which are never executed, and static/dashboard.js draws them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
}


# What every page takes from its URL: a month, and row ids, which are 32-bit integers in both
# databases (a larger one is a 422 page, not a database error).
Month = Annotated[str | None, Query(pattern=months.PATTERN)]
Id = Annotated[int, PathParameter(ge=1, le=MAX_INT)]


def see_other(url: str) -> RedirectResponse:
    """Post/redirect/get: a reload after a form shows the page instead of posting again."""
    return RedirectResponse(url, status_code=303)


def field(form: FormData, name: str) -> str:
    """A text field of the form, stripped (a file or a missing field: empty)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


ASSETS = Assets(STATIC)


def base_path(request: Request) -> str:
    """The dashboard's URL path, behind the proxy's prefix too (SAAS_ROOT_PATH)."""
    return f"{request.scope.get('root_path', '')}{PREFIX}"


def static_url(request: Request, name: str) -> str:
    return ASSETS.url(f"{base_path(request)}/static", name)


def money(cents: int) -> str:
    """Cents as a plain amount (the plans name no currency)."""
    return f"{cents // 100:,}.{cents % 100:02d}"


templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)
templates.env.globals["static_url"] = static_url
templates.env.globals["base_path"] = base_path
templates.env.globals["money"] = money


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    response: Response = templates.TemplateResponse(request, template, context, status_code=status)
    return response


def static_file(name: str) -> Response:
    return ASSETS.response(name)


class SignedOut(Exception):
    """No usable session: the sign-in page, with why (None: nobody signed in yet), and when to
    try again for a 429."""

    def __init__(
        self, message: str | None = None, status_code: int = 401, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


def error_page(request: Request, status_code: int, message: str) -> Response:
    return render(request, "error.html", status_code, message=message, code=status_code)


COOKIE = "saas_session"


def set_cookie(
    request: Request, response: Response, session_id: str, max_age: int, secure: bool | None
) -> None:
    """The session cookie: the only cookie the dashboard sets."""
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=max_age,
        path=base_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
    )


def forget_cookie(request: Request, response: Response) -> None:
    if COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path=base_path(request), httponly=True, samesite="strict")


def sign_in_page(request: Request, message: str | None, status_code: int = 200) -> Response:
    response = render(request, "sign_in.html", status_code, message=message)
    forget_cookie(request, response)
    return response


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """Dashboard errors as pages, and the security headers on every answer."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignedOut as exc:
                response = sign_in_page(request, exc.message, exc.status_code)
                if exc.retry_after is not None:
                    response.headers["Retry-After"] = str(exc.retry_after)
            except AppError as exc:
                response = error_page(request, exc.status_code, exc.detail)
                response.headers.update(exc.headers)  # Retry-After
            except RequestValidationError as exc:
                response = error_page(request, 422, describe_errors(exc.errors()))
            for name, value in SECURITY_HEADERS.items():
                if name not in response.headers:  # static files keep their Cache-Control
                    response.headers[name] = value
            return response

        return handle
