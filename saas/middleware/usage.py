"""Usage metering for authenticated customer requests (/v1): one event per request. A billable
answer (customer NLP request, 2xx) is held back until its event is committed; if the commit fails
the client gets 503 instead, and nothing is billed."""

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.db import utcnow
from saas.errors import json_error
from saas.middleware.auth import app_path
from saas.nlp.tasks import BATCH_PATH, TASKS, is_billable
from saas.usage.ledger import Event
from saas.usage.recorder import UsageRecorder, UsageWriteFailed

CUSTOMER_PREFIX = "/v1/"
_MODEL_ROUTE = re.compile(r"^/v1/(?P<model>[^/]+)/(?P<endpoint>[^/]+)$")
_PLAIN_ROUTES = {"/v1/models": "models", "/v1/usage": "usage", "/v1/extractions": "extractions"}
_MODEL_ENDPOINTS = set(TASKS) | {"versions", "version"}


def endpoint_of(path: str) -> tuple[str, str | None]:
    """(endpoint, model) for the dashboards; anything unknown is "other", so a client cannot
    fill the rollups with made-up paths."""
    if path in _PLAIN_ROUTES:
        return _PLAIN_ROUTES[path], None
    if path == "/v1/keys" or path.startswith("/v1/keys/"):
        return "keys", None
    match = _MODEL_ROUTE.match(path)
    if match and match["endpoint"] in _MODEL_ENDPOINTS:
        endpoint = "versions" if match["endpoint"] == "version" else match["endpoint"]
        return endpoint, match["model"]
    match = BATCH_PATH.match(path)
    if match:
        return f"{match['task']}/batch", match["model"]
    return "other", None


class UsageMiddleware:
    def __init__(self, app: ASGIApp, *, recorder: UsageRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {}) if scope["type"] == "http" else {}
        principal = state.get("principal")
        path = app_path(scope) if principal is not None else ""
        if principal is None or not path.startswith(CUSTOMER_PREFIX):
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        occurred_at = utcnow()
        held: list[Message] = []
        status = 500
        finished = False

        async def finish(answer: bool = True) -> None:
            nonlocal finished
            finished = True
            endpoint, model = endpoint_of(path)
            details = state.get("usage", {})
            billable = is_billable(scope["method"], path) and 200 <= status < 300
            event = Event(
                request_id=state.get("request_id") or uuid.uuid4().hex,
                occurred_at=occurred_at,
                account_id=principal.account_id,
                key_id=principal.key_id,
                endpoint=endpoint,
                model=details.get("model", model),
                status=status,
                chars=details.get("chars", 0),
                units=details.get("units", 1),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                billable=billable,
            )
            if not answer:  # the app failed before answering: count it, send nothing
                await self.recorder.record(event, durable=False)
                return
            try:
                await self.recorder.record(event, durable=billable, watch=principal.quota_alerts)
            except UsageWriteFailed:
                state["billing_failed"] = True  # the admission step gives the quota back
                detail = "Usage could not be recorded, so nothing was billed; retry shortly."
                await json_error(503, detail, {"Retry-After": "1"})(scope, receive, send)
                return
            for message in held:
                await send(message)

        async def hold(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await finish()

        try:
            await self.app(scope, receive, hold)
        finally:
            if not finished:
                await finish(answer=False)
