"""Errors as HTTP answers: `json_error` for the middleware, and the one set of exception
handlers that renders every error as `{"detail": ...}` with its status."""

from collections.abc import Mapping

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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


def install_error_handlers(app: FastAPI) -> None:
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
        log.exception("unhandled_error", path=request.url.path)  # any other constraint: a bug
        return json_error(500, "Internal server error.")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, UnicodeDecodeError | RecursionError):
            # FastAPI's body parser answers these with a vague 400; they are malformed JSON
            # (RFC 8259: UTF-8) or nesting deeper than the parser's recursion limit: our 422.
            return json_error(422, UNPARSABLE_BODY)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return json_error(exc.status_code, detail, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A real bug: log it with the request id, never send the traceback to the client.
        log.exception("unhandled_error", path=request.url.path)
        return json_error(500, "Internal server error.")
