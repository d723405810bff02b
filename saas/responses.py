"""Errors as HTTP answers: `json_error` for the middleware, and the one set of exception
handlers that renders every error as `{"detail": ...}` with its status."""

from collections.abc import Iterable, Mapping

import orjson
import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from saas.errors import CONFLICTING_WRITE, AppError, describe_errors, is_unique_violation

log = structlog.get_logger(__name__)
UNPARSABLE_BODY = "Request body is not valid JSON: not UTF-8, or nested too deeply."


def json_error(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"detail": detail}),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def route_of(request: Request) -> str | None:
    """The route template, for logs: never the raw path, which may hold a key a client put
    in the URL (the access line names the request, with the path redacted)."""
    path = getattr(request.scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def allowed_methods(routes: Iterable[BaseRoute], request: Request) -> set[str]:
    """Every method the request's path takes. The router's 405 names only the first route that
    matched the path, and a path often has several (GET and PATCH /admin/plans/{name})."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods or set()
    return methods


def install_error_handlers(app: FastAPI, routes: Iterable[BaseRoute] = ()) -> None:
    """`routes`: those of the app's routers, for the `Allow` header of a 405."""
    routes = list(routes)

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> Response:
        return json_error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return json_error(422, describe_errors(exc.errors()))

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError) -> Response:
        if is_unique_violation(exc):
            # Two writes raced past a service's uniqueness check; the database kept one.
            return json_error(409, CONFLICTING_WRITE)
        log.exception("unhandled_error", route=route_of(request))  # another constraint: a bug
        return json_error(500, "Internal server error.")

    @app.exception_handler(OperationalError)
    async def _operational_error(request: Request, exc: OperationalError) -> Response:
        # PostgreSQL down or restarting under a route that reads it (usage, admin pages): an
        # outage, answered as one (was a 500, tests/e2e/test_faults.py). SQLite's
        # OperationalError also covers SQL mistakes, so there it stays a bug.
        if not isinstance(exc.orig, psycopg.OperationalError):
            log.exception("unhandled_error", route=route_of(request))
            return json_error(500, "Internal server error.")
        log.warning("database_unavailable", route=route_of(request), error=type(exc.orig).__name__)
        detail = "The database is temporarily unavailable; retry shortly."
        return json_error(503, detail, {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, UnicodeDecodeError | RecursionError):
            # FastAPI's body parser answers these with a vague 400; they are malformed JSON
            # (RFC 8259: UTF-8) or nesting deeper than the parser's recursion limit: our 422.
            return json_error(422, UNPARSABLE_BODY)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        methods = allowed_methods(routes, request) if exc.status_code == 405 else None
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
        return json_error(exc.status_code, detail, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A real bug: log it with the request id, never send the traceback to the client.
        log.exception("unhandled_error", route=route_of(request))
        return json_error(500, "Internal server error.")
