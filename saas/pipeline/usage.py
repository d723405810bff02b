"""Usage metering for authenticated customer requests (/v1): one event per request. A billable
answer (a route whose Metering says billable, answered 2xx) is held back until its event is
committed; if the commit fails the client gets 503 instead, and nothing is billed."""

import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas import problems
from saas.idempotency.store import KEEP_ANSWERS, Answer, Completion
from saas.kit.db import utcnow
from saas.problems.responses import json_error
from saas.ratelimit.headers import as_strings
from saas.usage.ledger import Event
from saas.usage.recorder import UsageRecorder, UsageWriteFailed
from saas.web.context import Area, context_of


class UsageMiddleware:
    def __init__(self, app: ASGIApp, *, recorder: UsageRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = context_of(scope)
        principal = context.principal if context is not None else None
        if context is None or principal is None or context.area is not Area.customer:
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
            billable = context.metering.billable and 200 <= status < 300
            event = Event(
                request_id=context.request_id,
                occurred_at=occurred_at,
                account_id=principal.account_id,
                key_id=principal.key_id,
                endpoint=context.metering.endpoint,
                model=context.model,
                status=status,
                chars=context.chars,
                units=context.cost - context.failed_units,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                billable=billable,
            )
            if not answer:  # the app failed before answering: count it, send nothing
                await self.recorder.record(event, durable=False)
                return
            kept = self._kept_answer(context.idempotency_key, event, held) if billable else None
            try:
                await self.recorder.record(
                    event, durable=billable, watch=principal.quota_alerts, answer=kept
                )
            except UsageWriteFailed:
                context.billing_failed = True  # the admission step gives the quota back
                detail = "Usage could not be recorded, so nothing was billed; retry shortly."
                headers = {**as_strings(context.rate_limit_headers), "Retry-After": "1"}
                await json_error(problems.USAGE_UNAVAILABLE, detail, headers)(scope, receive, send)
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

    @staticmethod
    def _kept_answer(key: str | None, event: Event, held: list[Message]) -> Completion | None:
        """The answer to keep for the request's Idempotency-Key, committed with its event:
        status, content type and body. Not the other headers: the rate-limit ones would be
        stale on a replay, and the request id is the new request's."""
        if key is None:
            return None
        start = held[0]
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        content_type = Headers(raw=start.get("headers", [])).get("content-type")
        answer = Answer(event.status, content_type, body)
        expires_at = utcnow() + KEEP_ANSWERS
        return Completion(event.account_id, key, event.request_id, answer, expires_at)
