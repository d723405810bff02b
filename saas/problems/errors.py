"""Domain errors carry their problem type (the registry, saas/problems/: code and HTTP status) and
the fields that help, e.g. `limit`; saas/problems/responses.py renders every one as problem
details. No web framework here: services and the CLI raise these too."""

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from saas import problems
from saas.problems import ProblemType


class AppError(Exception):
    """`problem` is required: no error leaves without a code."""

    def __init__(
        self,
        detail: str,
        problem: ProblemType,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problem = problem
        self.status_code = problem.status
        self.headers = dict(headers or {})
        self.fields = fields  # the problem's extension members: limit, texts_index, errors


class NotFound(AppError):
    """The named plan, account or key does not exist (or is not the caller's)."""

    def __init__(self, detail: str, problem: ProblemType = problems.NOT_FOUND) -> None:
        super().__init__(detail, problem)


class Forbidden(AppError):
    pass


class Conflict(AppError):
    """A name that must be unique is taken, or the object is in a state that forbids the change."""


class Invalid(AppError):
    """Input that is well-formed but not acceptable (an unknown model, a bad rate limit...)."""

    def __init__(self, detail: str, **fields: Any) -> None:
        super().__init__(detail, problems.VALIDATION_FAILED, **fields)


class Overloaded(AppError):
    def __init__(self, detail: str = "The service is overloaded; retry shortly.") -> None:
        super().__init__(detail, problems.OVERLOADED, headers={"Retry-After": "1"})


CONFLICTING_WRITE = "The change conflicts with one made at the same time; read and retry."


def is_unique_violation(exc: IntegrityError) -> bool:
    """PostgreSQL's SQLSTATE 23505, or SQLite's message for the same."""
    if getattr(exc.orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


def describe_errors(errors: Sequence[Any]) -> str:
    """One readable sentence for a list of pydantic errors, for `detail` (FastAPI's request
    errors and a service's own validation alike)."""
    messages = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return "Request body is not valid JSON."
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg", "invalid value")
        messages.append(f"{location}: {message}" if location else message)
    return "; ".join(messages) or "Invalid request."


def is_json_invalid(errors: Sequence[Any]) -> bool:
    """A body that is not JSON at all (describe_errors says so alone), rather than wrong fields."""
    return any(error.get("type") == "json_invalid" for error in errors)


def issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """The `errors` member of a 422: where (`loc`, as pydantic gives it) and what (`msg`)."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid value")),
        }
        for error in errors
    ]


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Mapping[str, Any]) -> Model:
    """`data` as `model`, or the 422 (Invalid) its errors make: for input that does not arrive
    as a request body (a form, an update merged with what is stored)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(describe_errors(exc.errors()), errors=issues(exc.errors())) from None
