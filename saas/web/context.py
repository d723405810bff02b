"""The typed context of one request, shared by the middleware chain and the routes.

The outermost middleware creates it, with the route the request will reach and what that route
costs (`Metering`, declared next to each customer route); authentication adds the principal, the
admission step the model the policy allowed; the route adds the
characters it served (and the texts of a batch it could not), which the same step bills. Each
field has one writer, and the steps that read it run after it: no step leaves a flag for another.
One object with named fields instead of loose keys in `scope["state"]`.
"""

from collections.abc import MutableMapping
from dataclasses import dataclass
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
    # The body field holding the text (or a batch's list of texts) that the model policy checks
    # before admission (saas/nlp/policy.py), and whether the route runs the default model
    # instead of one its URL names.
    text_field: str | None = None
    default_model: bool = False


# A path under /v1 that matches no route (404, 405): counted for the dashboards, never billed.
UNROUTED = Metering("other")


@dataclass(slots=True)
class RequestContext:
    request_id: str
    area: Area
    metering: Metering = UNROUTED
    named_model: str | None = None  # the model the URL names, as typed (known or not)
    # The model the request runs, once the model policy (saas/nlp/policy.py) allowed it; usage
    # counts it, the route runs it.
    model: str | None = None
    principal: Principal | None = None
    chars: int = 0  # characters the route analysed
    # Texts of a batch that failed inside spaCy (an error entry in `results`): not billed, and
    # their reserved quota is given back.
    failed_units: int = 0


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
