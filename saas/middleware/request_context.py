"""Outermost middleware: the request's typed context (saas/context.py) with the route it will
reach and what that route costs, a request id on every response, one access-log line per request.
"""

import time
import uuid
from collections.abc import Iterable, Mapping

import structlog
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.context import (
    UNROUTED,
    Area,
    Metering,
    RequestContext,
    app_path,
    area_of,
    set_context,
)
from saas.responses import json_error

log = structlog.get_logger("saas.access")


class Endpoints:
    """Finds the route a request will reach and its Metering, before any route runs (admission
    must know what a request costs before letting it through).

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
                " declare what they cost next to the route (see saas/context.py)"
            )
        self.metering = {route.name: metering[route.name] for route in self.routes}

    def resolve(self, scope: Scope) -> tuple[Metering, str | None]:
        """What the matching route costs (UNROUTED when none matches: 404, 405, as the router
        will decide), and the model the URL names if the service runs it (usage counts
        rejections per model too; any other name would be whatever a client typed)."""
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                model = child.get("path_params", {}).get("model")
                return self.metering[route.name], model if model in self.models else None
        return UNROUTED, None


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, endpoints: Endpoints | None = None, access_log: bool = True
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Our own id, never the client's: it becomes the idempotency key of the usage record.
        request_id = uuid.uuid4().hex
        context = RequestContext(request_id=request_id, area=area_of(app_path(scope)))
        if context.area is Area.customer and self.endpoints is not None:
            context.metering, context.model = self.endpoints.resolve(scope)
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
            log.exception("unhandled_error", path=scope["path"], request_id=request_id)
            if answered:
                raise  # too late for another answer: the server closes the connection
            await json_error(500, "Internal server error.")(scope, receive, send_with_id)
        finally:
            if self.access_log:
                principal = context.principal
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    request_id=request_id,
                    key=principal.key_prefix if principal else None,
                )
