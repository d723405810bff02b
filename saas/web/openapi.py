"""What the OpenAPI schema promises beyond what FastAPI derives from the routes: every error is
problem details (`application/problem+json`, the `Problem` schema; saas/problems/responses.py
renders them all, saas/problems/ lists the codes, also in the description), each area of the
API declares the errors its pipeline answers with, ids have their real bounds (the field types
are saas/kit/fields.py), and `model` is an enum of the models this deployment runs.
tests/test_contract.py fuzzes the app against this schema."""

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from saas import problems
from saas.auth.principal import ADMIN_SCOPE
from saas.kit.fields import never_null
from saas.web.context import Area, area_of

if TYPE_CHECKING:  # the CLI imports the schemas, and starts without FastAPI
    from fastapi import FastAPI


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field")
    msg: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details. Programs branch on `code` (the description's
    Errors table, and `/errors`, list every one); `detail` is the sentence for people."""

    # Documented members beyond these may be added (a new field is not a breaking change).
    model_config = ConfigDict(json_schema_extra=never_null())

    type: str = Field(
        json_schema_extra={"format": "uri-reference"},
        description="This code's entry on the service's Errors page, e.g. `/errors#rate_limited`",
    )
    title: str = Field(description="A short summary of the code, the same every time")
    status: int = Field(ge=400, le=599, description="The HTTP status, repeated")
    detail: str = Field(description="What happened, for people (NLP Cloud clients read it)")
    code: str = Field(
        pattern="^[a-z][a-z0-9_]*$", description="The stable identifier programs branch on"
    )
    retry_after: int | None = Field(
        default=None, ge=0, description="Seconds to wait, as `Retry-After` (sent whenever it is)"
    )
    limit: int | None = Field(
        default=None, description="The limit that was hit (rate limit, quota, batch, size)"
    )
    texts_index: int | None = Field(
        default=None, ge=0, description="The text of a batch's `texts` at fault"
    )
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Each field at fault (422 `validation_failed`)"
    )


Responses = dict[int | str, dict[str, Any]]
_PROBLEM_REF = {"$ref": f"#/components/schemas/{Problem.__name__}"}


def errors(descriptions: Mapping[int, str]) -> Responses:
    """`responses=` for FastAPI: each status with its description and the problem body (moved
    under application/problem+json by `tighten`)."""
    return {code: {"model": Problem, "description": text} for code, text in descriptions.items()}


def problem_errors(*types: problems.ProblemType) -> Responses:
    """`responses=` for the problems a route answers, each status described by the titles and
    codes of the registry (saas/problems/), so the prose cannot drift from what is answered."""
    by_status: dict[int, list[str]] = {}
    for problem in types:
        described = f"{problem.title} (`{problem.code}`)"
        if described not in by_status.setdefault(problem.status, []):
            by_status[problem.status].append(described)
    return errors({status: "; ".join(titles) for status, titles in sorted(by_status.items())})


# The problems the pipeline (saas/pipeline/) answers, by what a route takes: a key, a billable
# admission (rate limits, quota, usage committed before the answer), a body, an Idempotency-Key.
KEYED_PROBLEMS = (
    problems.MISSING_API_KEY,
    problems.MALFORMED_API_KEY,
    problems.INVALID_API_KEY,
    problems.KEY_REVOKED,
    problems.KEY_EXPIRED,
    problems.ACCOUNT_SUSPENDED,
    problems.TOO_MANY_FAILED_KEYS,
    problems.AUTHENTICATION_UNAVAILABLE,
)
BILLABLE_PROBLEMS = (
    problems.RATE_LIMITED,
    problems.QUOTA_EXHAUSTED,
    problems.LIMITER_UNAVAILABLE,
    problems.USAGE_UNAVAILABLE,
)
BODY_PROBLEMS = (problems.INVALID_CONTENT_LENGTH, problems.REQUEST_TIMEOUT, problems.BODY_TOO_LARGE)
IDEMPOTENCY_PROBLEMS = (
    problems.INVALID_IDEMPOTENCY_KEY,
    problems.IDEMPOTENCY_KEY_IN_USE,
    problems.IDEMPOTENCY_KEY_REUSED,
    problems.IDEMPOTENCY_UNAVAILABLE,
)


# The answers of the middleware chain (saas/pipeline/), by area, declared once per router.
# A body over SAAS_MAX_BODY_BYTES, or a Content-Length that is not a number: every route that
# takes a body.
BODY = errors(
    {
        400: "Invalid Content-Length header",
        408: "Body not received within SAAS_BODY_TIMEOUT; the connection is closed",
        413: "Body too large",
    }
)
_KEYED = {
    401: "Missing, malformed, unknown, revoked or expired API key",
    403: "Account suspended",
    429: "Too many failed keys from this address; retry after Retry-After",
    503: "Key authentication unavailable (database down); retry after Retry-After",
}
CUSTOMER = errors(
    {
        **_KEYED,
        429: "Rate limit exceeded, or too many failed keys from this address; retry after"
        " Retry-After",
        503: "Authentication or rate limiting unavailable; retry after Retry-After",
    }
)
ADMIN = errors(
    {
        **_KEYED,
        403: "Account suspended, or the key lacks the 'admin' scope",
        429: "Admin rate limit exceeded, or too many failed keys from this address; retry"
        " after Retry-After",
        503: "Authentication or rate limiting unavailable; retry after Retry-After",
    }
)

_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
# The three ways a key is sent (saas/pipeline/auth.py), each operation behind a key accepting
# any one of them. Declared, "Authorize" in /docs sends the key, generated clients know how, and
# a fuzzer can check that every /v1 and /admin operation refuses a request without one.
# NLP Cloud's `Token` is no HTTP authentication scheme that OpenAPI names: it is declared as the
# whole Authorization header, which the person authorizing types with its "Token " prefix.
_SECURITY_SCHEMES = {
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "NLP Cloud's form: type the word Token, a space and the key "
        "(`Token sk_live_...`).",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`. Type the key alone: `sk_live_...`.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`X-API-Key: <key>`. Type the key alone: `sk_live_...`.",
    },
}
# OpenAPI 3.1 lets the requirement of a scheme that is not OAuth list the roles it needs.
_ADMIN_NOTE = f"Needs a key with the `{ADMIN_SCOPE}` scope: any other key gets 403."


def security(area: Area) -> list[dict[str, list[str]]]:
    """An operation's `security`: any one of the schemes, with the admin scope under /admin."""
    roles = [ADMIN_SCOPE] if area is Area.admin else []
    return [{name: roles} for name in _SECURITY_SCHEMES]


def _server_error() -> dict[str, Any]:
    return {
        "description": "Internal error (`internal_error`), or a text spaCy could not process"
        " (`inference_failed`, routes that run it)",
        "content": {problems.MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}},
    }


def _problem_content(answer: dict[str, Any]) -> None:
    """An error answer's body: problem details, under their own media type. FastAPI puts every
    body under application/json, and its default 422 is a list of errors."""
    schemas = [media.get("schema") for media in answer.get("content", {}).values()]
    if _PROBLEM_REF in schemas or {"$ref": _VALIDATION_REF} in schemas:
        answer["content"] = {problems.MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}}


def errors_section() -> str:
    """The description's Errors section: every code, from the registry."""
    return (
        "\n\n## Errors\n\nEvery error is `application/problem+json` (RFC 9457): `type`, `title`,"
        " `status`, `detail` (the sentence NLP Cloud clients read) and `code`, plus `retry_after`"
        " (whenever `Retry-After` is sent), `limit` (the limit that was hit), `texts_index` (the"
        " text of a batch at fault) and `errors` (each field at fault) where they apply. `type`"
        f" links each code to the `{problems.PAGE}` page.\n\n{problems.markdown_table()}\n"
    )


def tighten(schema: dict[str, Any], models: Collection[str]) -> dict[str, Any]:
    """FastAPI's schema, corrected in place where it cannot know better: errors are problem
    details under their own media type (its default 422 is a list of errors); `model` is any
    string to it, but only the configured models reach an endpoint (any other is 404) or go
    into a plan. The description gains the Errors table."""
    schema.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
    components = schema["components"].setdefault("schemas", {})
    # Declared even if no route names it (FastAPI's own 422s point to it below).
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**problem.pop("$defs", {}), Problem.__name__: problem}.items():
        components.setdefault(name, definition)
    info = schema.setdefault("info", {})
    info["description"] = info.get("description", "") + errors_section()
    for path, operations in schema.get("paths", {}).items():
        area = area_of(path)
        for operation in operations.values():
            if area is not Area.public:
                operation["security"] = security(area)
            if area is Area.admin:
                described = [operation.get("description"), _ADMIN_NOTE]
                operation["description"] = "\n\n".join(filter(None, described))
            # Any operation may fail (and one that runs spaCy may meet a text it cannot take):
            # declared, so a generated client parses that answer too.
            operation.setdefault("responses", {}).setdefault("500", _server_error())
            for status, answer in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    _problem_content(answer)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "model":
                    parameter["schema"] = {"type": "string", "enum": sorted(models)}
    # A plan's `models`: configured ones, at least one (null: all of them).
    for plan in ("PlanCreate", "PlanUpdate"):
        field = components.get(plan, {}).get("properties", {}).get("models", {})
        for choice in field.get("anyOf", []):
            if choice.get("type") == "array":
                choice.update(items={"type": "string", "enum": sorted(models)}, minItems=1)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: "FastAPI", models: Collection[str]) -> None:
    """Serve the tightened schema at /openapi.json, which /docs and /redoc read (built once, on
    first request)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tighten(build(), models)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
