"""Errors as HTTP answers, all RFC 9457 problem details (the registry: saas/problems/):
`json_error` for the pipeline's steps, and the one set of exception handlers that renders every
other error."""

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from saas import problems
from saas.problems import ProblemType
from saas.problems.errors import (
    CONFLICTING_WRITE,
    AppError,
    describe_errors,
    is_json_invalid,
    is_unique_violation,
    issues,
)

log = structlog.get_logger(__name__)
UNPARSABLE_BODY = "Request body is not valid JSON: not UTF-8, or nested too deeply."
# What Starlette and FastAPI raise HTTPException for themselves (the router, the body parser).
_BY_STATUS = {
    400: problems.MALFORMED_BODY,
    404: problems.NOT_FOUND,
    405: problems.METHOD_NOT_ALLOWED,
}


class ProblemResponse(Response):
    """Problem details. `type` names the /errors page under the request's root path (the /api
    prefix behind the proxy), which only the scope knows: the body is rendered again there.
    `retry_after` repeats Retry-After whenever it is sent."""

    media_type = problems.MEDIA_TYPE

    def __init__(
        self,
        problem: ProblemType,
        detail: str,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.problem, self.detail = problem, detail
        self.fields = dict(fields or {})
        for name, value in (headers or {}).items():
            if name.lower() == "retry-after":
                self.fields["retry_after"] = int(value)
        super().__init__(
            problems.render(problem, detail, "", self.fields), problem.status, dict(headers or {})
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        if root_path:
            self.body = problems.render(self.problem, self.detail, root_path, self.fields)
            # In place: the middleware may have added headers since (rate limits).
            length = str(len(self.body)).encode()
            self.raw_headers = [
                (name, length if name == b"content-length" else value)
                for name, value in self.raw_headers
            ]
        await super().__call__(scope, receive, send)


def json_error(
    problem: ProblemType,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> Response:
    """The answer for `problem`: a code is required, so no error leaves without one."""
    return ProblemResponse(problem, detail, headers, fields)


class HTTPProblem(StarletteHTTPException):
    """An HTTPException (FastAPI's body reader passes those through unchanged) that knows its
    problem type and fields."""

    def __init__(
        self,
        problem: ProblemType,
        detail: str,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(problem.status, detail, dict(headers or {}))
        self.problem = problem
        self.fields = fields

    def response(self) -> Response:
        return json_error(self.problem, self.detail, self.headers, **self.fields)


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
        return json_error(exc.problem, exc.detail, exc.headers, **exc.fields)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if is_json_invalid(errors):
            return json_error(problems.INVALID_JSON, describe_errors(errors))
        return json_error(
            problems.VALIDATION_FAILED, describe_errors(errors), errors=issues(errors)
        )

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError) -> Response:
        if is_unique_violation(exc):
            # Two writes raced past a service's uniqueness check; the database kept one.
            return json_error(problems.CONFLICTING_WRITE, CONFLICTING_WRITE)
        log.exception("unhandled_error", route=route_of(request))  # another constraint: a bug
        return internal_error()

    @app.exception_handler(OperationalError)
    async def _operational_error(request: Request, exc: OperationalError) -> Response:
        # PostgreSQL down or restarting under a route that reads it (usage, admin pages): an
        # outage, answered as one (was a 500, tests/e2e/test_faults.py). SQLite's
        # OperationalError also covers SQL mistakes, so there it stays a bug.
        if not isinstance(exc.orig, psycopg.OperationalError):
            log.exception("unhandled_error", route=route_of(request))
            return internal_error()
        log.warning("database_unavailable", route=route_of(request), error=type(exc.orig).__name__)
        detail = "The database is temporarily unavailable; retry shortly."
        return json_error(problems.DATABASE_UNAVAILABLE, detail, {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, HTTPProblem):  # ours (a body refused by the middleware)
            return exc.response()
        if isinstance(exc.__cause__, UnicodeDecodeError | RecursionError):
            # FastAPI's body parser answers these with a vague 400; they are malformed JSON
            # (RFC 8259: UTF-8) or nesting deeper than the parser's recursion limit: our 422.
            return json_error(problems.INVALID_JSON, UNPARSABLE_BODY)
        problem = _BY_STATUS.get(exc.status_code)
        if problem is None:  # a status no code covers: nothing here raises one, so a bug
            log.error("unregistered_http_error", route=route_of(request), status=exc.status_code)
            return internal_error()
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        methods = allowed_methods(routes, request) if exc.status_code == 405 else None
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
        return json_error(problem, detail, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A real bug: log it with the request id, never send the traceback to the client.
        log.exception("unhandled_error", route=route_of(request))
        return internal_error()


def internal_error() -> Response:
    return json_error(problems.INTERNAL_ERROR, "Internal server error.")
