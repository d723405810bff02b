"""The typed context of one request, shared by the middleware chain and the routes.

The outermost middleware creates it, with the route the request will reach and what that route
costs (`Metering`, declared next to each customer route); authentication adds the principal,
admission the cost it charged, the route the model and characters it served (and the texts of a
batch it could not), and metering whether the usage could be committed. One object with named
fields instead of loose keys in `scope["state"]`.
"""

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from saas.auth.principal import Principal

CUSTOMER_PREFIX = "/v1"  # customer routes: key authentication, plan limits, metering
ADMIN_PREFIX = "/admin"  # admin routes: key authentication with the admin scope
_STATE_KEY = "context"


class Area(StrEnum):
    customer = "customer"
    admin = "admin"
    public = "public"  # health, docs: no key


def area_of(path: str) -> Area:
    for prefix, area in ((CUSTOMER_PREFIX, Area.customer), (ADMIN_PREFIX, Area.admin)):
        if path == prefix or path.startswith(prefix + "/"):
            return area
    return Area.public


@dataclass(frozen=True, slots=True)
class Metering:
    """What answering a customer route costs. Declared next to the routes (see METERING in
    saas/nlp/routes.py); the app refuses to start with a customer route that has none."""

    endpoint: str  # the name usage, invoices and dashboards show
    billable: bool = False  # a 2xx answer is billed and counts against the monthly quota
    per_text: bool = False  # a batch: one unit per text of the body's `texts`


# A path under /v1 that matches no route (404, 405): counted for the dashboards, never billed.
UNROUTED = Metering("other")


@dataclass(slots=True)
class RequestContext:
    request_id: str
    area: Area
    metering: Metering = UNROUTED
    model: str | None = None  # a model the service runs, named by the URL or chosen by the route
    named_model: str | None = None  # the model the URL names, as typed (known or not)
    principal: Principal | None = None
    cost: int = 1  # units admission charged: 1, or the number of texts of a batch
    chars: int = 0  # characters the route analysed
    # The Idempotency-Key this request holds the claim of: metering stores its 2xx answer with
    # the usage event (saas/pipeline/idempotency.py).
    idempotency_key: str | None = None
    # Texts of a batch that failed inside spaCy (an error entry in `results`): not billed, and
    # their reserved quota is given back.
    failed_units: int = 0
    billing_failed: bool = False  # the usage event could not be committed: refund the quota
    # The rate-limit headers admission sent (or would have): metering's own 503 carries them too.
    rate_limit_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def app_path(scope: MutableMapping[str, Any]) -> str:
    """The path below SAAS_ROOT_PATH, whether or not the server left the prefix in."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def set_context(scope: MutableMapping[str, Any], context: RequestContext) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = context


def context_of(scope: MutableMapping[str, Any]) -> RequestContext | None:
    """The request's context, or None outside an HTTP request the chain has seen."""
    state = scope.get("state")
    context: RequestContext | None = state.get(_STATE_KEY) if state else None
    return context
