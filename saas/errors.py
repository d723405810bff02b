"""Domain errors carry their HTTP status; one handler renders every error as `{"detail": ...}`."""

from collections.abc import Mapping

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = structlog.get_logger(__name__)


class AppError(Exception):
    status_code = 400

    def __init__(
        self,
        detail: str,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class NotFound(AppError):
    status_code = 404


class Overloaded(AppError):
    status_code = 503

    def __init__(self, detail: str = "The service is overloaded; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


def json_error(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"detail": detail}),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def _describe_validation_error(exc: RequestValidationError) -> tuple[int, str]:
    """One readable sentence instead of FastAPI's list, so every error body is {"detail": str}."""
    messages = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return 422, "Request body is not valid JSON."
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg", "invalid value")
        messages.append(f"{location}: {message}" if location else message)
    return 422, "; ".join(messages) or "Invalid request."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> Response:
        return json_error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        status_code, detail = _describe_validation_error(exc)
        return json_error(status_code, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return json_error(exc.status_code, detail, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A real bug: log it with the request id, never send the traceback to the client.
        log.exception("unhandled_error", path=request.url.path)
        return json_error(500, "Internal server error.")
