"""Outermost middleware: the request's typed context (saas/web/context.py) with the route it will
reach and what that route costs, a request id on every response, one access-log line and the
request metrics (saas/kit/metrics.py) per request, both by route template.
"""

import time
import uuid
from collections.abc import Iterable, Mapping

import structlog
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.auth import key_format
from saas.kit import metrics
from saas.problems.responses import internal_error
from saas.web.context import (
    UNROUTED,
    Area,
    Metering,
    RequestContext,
    app_path,
    area_of,
    set_context,
)

log = structlog.get_logger("saas.access")
MATCHES_KEPT = 4096  # (method, path) pairs whose customer route MeteredRoutes remembers...
MATCHED_PATH_CHARS = 200  # ...for paths up to this long (4096 x 200 characters at most)


class MeteredRoutes:
    """The customer routes with their price table: finds the route a request will reach and its
    Metering, before any route runs (admission must know what a request costs before letting it
    through).

    It is given the customer routers the app includes, and every route in them must have a
    Metering entry: a route added without one would be served without being billed, so the app
    refuses to start instead."""

    def __init__(
        self,
        routers: Iterable[APIRouter],
        tables: Iterable[Mapping[str, Metering]],
        models: Iterable[str] = (),
    ) -> None:
        self.models = frozenset(models)  # the model names the service runs
        metering: dict[str, Metering] = {}
        for table in tables:
            taken = sorted(set(metering) & set(table))
            if taken:
                raise RuntimeError(f"route names declared twice: {', '.join(taken)}")
            metering.update(table)
        customer = [
            route
            for router in routers
            for route in router.routes
            if area_of(getattr(route, "path", "")) is Area.customer
        ]
        others = [route for route in customer if not isinstance(route, APIRoute)]
        if others:  # a websocket or a mount has no Metering and would not be metered
            raise RuntimeError(f"customer routes that are not HTTP routes: {others}")
        self.routes = [route for route in customer if isinstance(route, APIRoute)]
        missing = sorted({r.name for r in self.routes} - set(metering))
        if missing:
            raise RuntimeError(
                f"customer routes without a Metering entry: {', '.join(missing)};"
                " declare what they cost next to the route (see saas/web/context.py)"
            )
        self.metering = {route.name: metering[route.name] for route in self.routes}
        self._matched: dict[tuple[str, str, str], tuple[APIRoute | None, Metering, str | None]] = {}
        # The routes behind a key (/v1, /admin), for the route template of a request answered
        # before the router ran (a refused key, a rate limit): the template it would have reached.
        # Public paths are never refused before routing, so a scanner's 404s cost no search.
        self.keyed_routes: list[BaseRoute] = [
            route
            for router in routers
            for route in router.routes
            if area_of(getattr(route, "path", "")) is not Area.public
        ]

    def match(self, scope: Scope) -> tuple[APIRoute | None, Metering, str | None]:
        """The customer route that matches, what it costs (UNROUTED when none matches: 404,
        405, as the router will decide), and the model the URL names, as typed (None for a
        route without one)."""
        # Remembered per method and path: customers call a handful of URLs, and trying each
        # route's regex cost more than the rest of this middleware. Only short paths that reach
        # a route of a model the service runs: this runs before authentication, and made-up
        # paths (404s, unknown models, long ones) must not fill memory.
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        found = self._matched.get(key)
        if found is None:
            found = self._match(scope)
            route, _, model = found
            short = len(key[2]) <= MATCHED_PATH_CHARS
            if route is not None and short and self.known(model) == model:
                if len(self._matched) >= MATCHES_KEPT:
                    self._matched.clear()
                self._matched[key] = found
        return found

    def _match(self, scope: Scope) -> tuple[APIRoute | None, Metering, str | None]:
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                model = child.get("path_params", {}).get("model")
                return route, self.metering[route.name], model
        return None, UNROUTED, None

    def known(self, model: str | None) -> str | None:
        """`model` if the service runs it. Usage counts rejections per model too, but only of
        these: any other name would be whatever a client typed."""
        return model if model in self.models else None

    def template(self, scope: Scope) -> str:
        """The path template of the /v1 or /admin route the router would pick (a full match,
        else one that differs only by method: 405), or metrics.UNROUTED."""
        partial: BaseRoute | None = None
        for route in self.keyed_routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route_template(route)
            if match is Match.PARTIAL and partial is None:
                partial = route
        return route_template(partial)


def route_template(route: object) -> str:
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else metrics.UNROUTED


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, metered: MeteredRoutes | None = None, access_log: bool = True
    ) -> None:
        self.app = app
        self.metered = metered
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Our own id, never the client's: it becomes the idempotency key of the usage record.
        request_id = uuid.uuid4().hex
        context = RequestContext(request_id=request_id, area=area_of(app_path(scope)))
        customer_route: APIRoute | None = None
        if context.area is Area.customer and self.metered is not None:
            customer_route, context.metering, context.named_model = self.metered.match(scope)
        set_context(scope, context)
        started = time.perf_counter()
        status = 500
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A real bug. Answered here, not by Starlette's outermost error middleware, so the
            # 500 carries X-Request-ID and the log line names the request; never a traceback
            # in the body.
            log.exception(
                "unhandled_error", path=key_format.redact_keys(scope["path"]), request_id=request_id
            )
            if answered:
                raise  # too late for another answer: the server closes the connection
            await internal_error()(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope, context.area, customer_route)
            metrics.observe_request(route, scope["method"], status, seconds)
            if self.access_log:
                # Ids only: never a key (not even its prefix), an account name or a text.
                principal = context.principal
                log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    path=key_format.redact_keys(scope["path"]),
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                    request_id=request_id,
                    account_id=principal.account_id if principal else None,
                    key_id=principal.key_id if principal else None,
                )

    def _route(self, scope: Scope, area: Area, customer_route: APIRoute | None) -> str:
        """The route template: the route the router ran (Starlette and FastAPI leave it in the
        scope), else the customer route matched on the way in, else the one the request would
        have reached (answered before routing, such as a refused admin key), else UNROUTED."""
        route = scope.get("route")
        if route is not None:
            return route_template(route)
        if customer_route is not None:
            return customer_route.path
        if area is not Area.public and self.metered is not None:
            return self.metered.template(scope)
        return metrics.UNROUTED
