"""Domain errors carry their HTTP status (saas/responses.py renders every error as
`{"detail": ...}`). No web framework here: services and the CLI raise these too."""

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError


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
    """The named plan, account or key does not exist (or is not the caller's)."""

    status_code = 404


class Forbidden(AppError):
    status_code = 403


class Conflict(AppError):
    """A name that must be unique is taken, or the object is in a state that forbids the change."""

    status_code = 409


class Invalid(AppError):
    """Input that is well-formed but not acceptable (an unknown model, a bad rate limit...)."""

    status_code = 422


class Overloaded(AppError):
    status_code = 503

    def __init__(self, detail: str = "The service is overloaded; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


CONFLICTING_WRITE = "The change conflicts with one made at the same time; read and retry."


def is_unique_violation(exc: IntegrityError) -> bool:
    """PostgreSQL's SQLSTATE 23505, or SQLite's message for the same."""
    if getattr(exc.orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


def describe_errors(errors: Sequence[Any]) -> str:
    """One readable sentence for a list of pydantic errors, so every error body is
    {"detail": str} (FastAPI's request errors and a service's own validation alike)."""
    messages = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return "Request body is not valid JSON."
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg", "invalid value")
        messages.append(f"{location}: {message}" if location else message)
    return "; ".join(messages) or "Invalid request."


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Mapping[str, Any]) -> Model:
    """`data` as `model`, or the 422 (Invalid) its errors make: for input that does not arrive
    as a request body (a form, an update merged with what is stored)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(describe_errors(exc.errors())) from None
