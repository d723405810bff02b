"""Every error this API answers, as RFC 9457 problem details: one registry of stable codes, each
with its HTTP status, a short title and what it means. Error bodies (saas/problems/responses.py,
and the 431 of saas/server/protocol.py), the /errors page, the README's table and the OpenAPI
description are all built from it, so a code cannot be answered without being documented.

A body: `{"type": "<root>/errors#<code>", "title", "status", "detail", "code"}` plus, where they
apply, `retry_after` (whenever Retry-After is sent), `limit` (the limit that was hit),
`texts_index` (the text of a batch at fault) and `errors` (each field of a 422). `detail` is the
human sentence NLP Cloud clients read; `code` is what programs branch on.

Imports nothing of the project: every layer answers errors."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MEDIA_TYPE = "application/problem+json"
PAGE = "/errors"  # the page that documents every code, with an anchor per code


@dataclass(frozen=True, slots=True)
class ProblemType:
    code: str  # stable snake_case: renaming or removing one breaks clients
    status: int
    title: str  # the same for every occurrence (RFC 9457)
    meaning: str  # one line, for the docs
    extras: tuple[str, ...] = ()  # extension members every answer of this code carries


REGISTRY: dict[str, ProblemType] = {}


def _problem(
    code: str, status: int, title: str, meaning: str, extras: tuple[str, ...] = ()
) -> ProblemType:
    assert code not in REGISTRY, code
    problem = REGISTRY[code] = ProblemType(code, status, title, meaning, extras)
    return problem


_RETRY = ("retry_after",)

# Authentication (saas/pipeline/auth.py).
MISSING_API_KEY = _problem(
    "missing_api_key",
    401,
    "Missing API key",
    "No key was sent: use `Authorization: Token <key>`, `Authorization: Bearer <key>` or"
    " `X-API-Key: <key>`.",
)
MALFORMED_API_KEY = _problem(
    "malformed_api_key",
    401,
    "Malformed API key",
    "The key is not in this service's format (mistyped or cut short: its checksum fails).",
)
INVALID_API_KEY = _problem("invalid_api_key", 401, "Invalid API key", "No such key.")
KEY_REVOKED = _problem("key_revoked", 401, "API key revoked", "The key has been revoked.")
KEY_EXPIRED = _problem("key_expired", 401, "API key expired", "The key's expiry date has passed.")
ACCOUNT_SUSPENDED = _problem(
    "account_suspended", 403, "Account suspended", "The key's account is suspended."
)
ADMIN_SCOPE_REQUIRED = _problem(
    "admin_scope_required",
    403,
    "Admin scope required",
    "The route needs a key with the `admin` scope.",
)
TOO_MANY_FAILED_KEYS = _problem(
    "too_many_failed_keys",
    429,
    "Too many failed keys",
    "This address sent too many invalid keys; keys it has not used successfully are refused"
    " for `retry_after` seconds.",
    _RETRY,
)
AUTHENTICATION_UNAVAILABLE = _problem(
    "authentication_unavailable",
    503,
    "Authentication unavailable",
    "The key could not be checked (the database is unreachable); retry after `retry_after`.",
    _RETRY,
)

# Rate limits and quota (saas/pipeline/admission.py).
RATE_LIMITED = _problem(
    "rate_limited",
    429,
    "Rate limit exceeded",
    "A window of the plan's rate limit is full (each text of a batch counts); `limit` is that"
    " window's limit; retry after `retry_after`.",
    ("retry_after", "limit"),
)
QUOTA_EXHAUSTED = _problem(
    "quota_exhausted",
    402,
    "Monthly quota exhausted",
    "The month's quota of billable requests (`limit`) is used up: upgrade the plan or wait for"
    " the next month (UTC).",
    ("retry_after", "limit"),
)
LIMITER_UNAVAILABLE = _problem(
    "limiter_unavailable",
    503,
    "Rate limiting unavailable",
    "Rate limits could not be checked, and this deployment refuses requests rather than admit"
    " them unchecked; retry after `retry_after`.",
    _RETRY,
)

# The request itself: its route, headers and body.
NOT_FOUND = _problem(
    "not_found",
    404,
    "Not found",
    "Nothing here: no such route, or no such plan, account or key (or not yours).",
)
METHOD_NOT_ALLOWED = _problem(
    "method_not_allowed",
    405,
    "Method not allowed",
    "The route does not take this method; the `Allow` header lists those it takes.",
)
INVALID_REQUEST = _problem(
    "invalid_request",
    400,
    "Invalid HTTP request",
    "The request is not valid HTTP/1.1 (its request line, a header or a chunk is malformed);"
    " the connection is closed.",
)
HEADERS_TOO_LARGE = _problem(
    "headers_too_large",
    431,
    "Request headers too large",
    "The request's headers are over the server's limit (`limit`, in bytes); the connection is"
    " closed.",
    ("limit",),
)
INVALID_CONTENT_LENGTH = _problem(
    "invalid_content_length",
    400,
    "Invalid Content-Length",
    "The `Content-Length` header is not a number.",
)
BODY_TOO_LARGE = _problem(
    "body_too_large",
    413,
    "Request body too large",
    "The body is over the server's limit (`limit`, in bytes).",
    ("limit",),
)
REQUEST_TIMEOUT = _problem(
    "request_timeout",
    408,
    "Request body too slow",
    "The body did not arrive within the server's deadline; the connection is closed.",
)
UNSUPPORTED_MEDIA_TYPE = _problem(
    "unsupported_media_type",
    415,
    "Unsupported media type",
    "The body is declared as something other than JSON (`Content-Type`).",
)
MALFORMED_BODY = _problem(
    "malformed_body",
    400,
    "Malformed body",
    "The body could not be parsed as what it is declared to be (e.g. a multipart form"
    " without its boundary).",
)
INVALID_JSON = _problem(
    "invalid_json",
    422,
    "Invalid JSON",
    "The body is not valid JSON: malformed, not UTF-8, or nested too deeply.",
)
VALIDATION_FAILED = _problem(
    "validation_failed",
    422,
    "Validation failed",
    "A field or parameter is missing, of the wrong type or not acceptable; `errors` lists"
    " each one (`loc`, `msg`) when the request's own fields are at fault.",
)

# The NLP endpoints (saas/nlp/routes.py).
MODEL_NOT_FOUND = _problem(
    "model_not_found",
    404,
    "Model not found",
    "The service runs no model of that name; `GET /v1/models` lists those your plan allows.",
)
MODEL_NOT_IN_PLAN = _problem(
    "model_not_in_plan", 403, "Model not in plan", "The plan does not include the model."
)
EMPTY_TEXT = _problem(
    "empty_text",
    400,
    "Empty text",
    "A text is empty or only whitespace (in a batch, `texts_index` says which).",
)
INVALID_TEXT = _problem(
    "invalid_text",
    400,
    "Invalid text",
    "A text is not valid Unicode: it holds an unpaired surrogate (in a batch, `texts_index`"
    " says which).",
)
TEXT_TOO_LONG = _problem(
    "text_too_long",
    413,
    "Text too long",
    "A text has more characters than the plan's `max_text_chars` (`limit`; in a batch,"
    " `texts_index` says which).",
    ("limit",),
)
BATCH_TOO_LARGE = _problem(
    "batch_too_large",
    413,
    "Batch too large",
    "More texts than a batch may hold (`limit`): the plan's `max_batch_texts`, or its smallest"
    " rate-limit window.",
    ("limit",),
)
OVERLOADED = _problem(
    "overloaded",
    503,
    "Overloaded",
    "The NLP engine's queue is full, or the engine is starting or restarting; retry after"
    " `retry_after`.",
    _RETRY,
)
INFERENCE_FAILED = _problem(
    "inference_failed",
    500,
    "Inference failed",
    "spaCy could not process the text (e.g. one over the model's `nlp.max_length`). In a batch"
    " it is the entry of that text; the batch is 500 only when every text failed.",
)

# Idempotency-Key (saas/pipeline/idempotency.py).
INVALID_IDEMPOTENCY_KEY = _problem(
    "invalid_idempotency_key",
    400,
    "Invalid Idempotency-Key",
    "The `Idempotency-Key` header is not 1 to 255 printable ASCII characters.",
)
IDEMPOTENCY_KEY_IN_USE = _problem(
    "idempotency_key_in_use",
    409,
    "Idempotency-Key in use",
    "A request with this `Idempotency-Key` is still running; retry after `retry_after` to get"
    " its answer.",
    _RETRY,
)
IDEMPOTENCY_KEY_REUSED = _problem(
    "idempotency_key_reused",
    422,
    "Idempotency-Key reused",
    "The `Idempotency-Key` was used with another request (body, endpoint or model); send a new"
    " key for a new request.",
)
IDEMPOTENCY_UNAVAILABLE = _problem(
    "idempotency_unavailable",
    503,
    "Idempotency keys unavailable",
    "The `Idempotency-Key` could not be checked (the database is unreachable); retry after"
    " `retry_after`.",
    _RETRY,
)

# Usage metering and the database.
USAGE_UNAVAILABLE = _problem(
    "usage_unavailable",
    503,
    "Usage recording unavailable",
    "The request's usage could not be recorded, so its answer was withheld and nothing was"
    " billed; retry after `retry_after`.",
    _RETRY,
)
DATABASE_UNAVAILABLE = _problem(
    "database_unavailable",
    503,
    "Database unavailable",
    "The database is unreachable or restarting; retry after `retry_after`.",
    _RETRY,
)

# Keys, plans and accounts (the key and admin APIs).
KEY_LIMIT_REACHED = _problem(
    "key_limit_reached",
    403,
    "Key limit reached",
    "The account has as many active keys as its plan allows (`limit`); revoke one first.",
    ("limit",),
)
KEY_BEING_REPLACED = _problem(
    "key_being_replaced",
    403,
    "Key being replaced",
    "This key was rolled and works only until its grace period ends; manage keys with its"
    " successor.",
)
KEY_NOT_ROLLABLE = _problem(
    "key_not_rollable",
    409,
    "Key cannot be rolled",
    "The key was already rolled, or is revoked or expired: roll its successor, or create a key.",
)
NAME_TAKEN = _problem(
    "name_taken", 409, "Name taken", "A plan or account of that name already exists."
)
CONFLICTING_WRITE = _problem(
    "conflicting_write",
    409,
    "Conflicting write",
    "The change conflicts with one made at the same time; read and retry.",
)
CSRF_FAILED = _problem(
    "csrf_failed",
    403,
    "Form refused",
    "Dashboard only: a form that expired or was not sent from the dashboard's own pages.",
)
TOO_MANY_DASHBOARD_WRITES = _problem(
    "too_many_dashboard_writes",
    429,
    "Too many changes",
    "Dashboard only: this key signed in or submitted forms too often; the page's `Retry-After`"
    " header says when to try again.",
)

INTERNAL_ERROR = _problem(
    "internal_error",
    500,
    "Internal server error",
    "A bug on our side, logged with the answer's `X-Request-ID`: quote it when reporting.",
)


def type_uri(problem: ProblemType, root_path: str = "") -> str:
    """A URI reference to the code's entry on the service's own /errors page (no internet
    needed), behind the proxy's prefix too."""
    return f"{root_path}{PAGE}#{problem.code}"


def body(
    problem: ProblemType, detail: str, root_path: str = "", fields: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": type_uri(problem, root_path),
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "code": problem.code,
        **(fields or {}),
    }


def render(
    problem: ProblemType, detail: str, root_path: str = "", fields: Mapping[str, Any] | None = None
) -> bytes:
    return orjson.dumps(body(problem, detail, root_path, fields))


def markdown_table() -> str:
    """The registry as the Markdown table the README and the OpenAPI description show."""
    rows = ["| code | status | meaning |", "|---|---|---|"]
    for problem in REGISTRY.values():
        rows.append(f"| `{problem.code}` | {problem.status} | {problem.meaning} |")
    return "\n".join(rows)
