"""The usage side of the admission step: one event per authenticated customer request (/v1),
and the answer held until that event is committed."""

import time
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import Message, Send

from saas.auth.principal import Principal
from saas.idempotency.store import KEEP_ANSWERS, Answer, Completion
from saas.kit.db import utcnow
from saas.usage.ledger import Event
from saas.web.context import RequestContext


@dataclass(slots=True)
class HeldAnswer:
    """What the route sends, kept back (with `headers` added to its start) until `add` says it
    is complete; the admission step then commits the usage event before sending it."""

    headers: list[tuple[bytes, bytes]]
    messages: list[Message] = field(default_factory=list)
    status: int = 500

    def add(self, message: Message) -> bool:
        """Keep `message`; True once the answer is complete."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", []), *self.headers]}
        self.messages.append(message)
        return message["type"] == "http.response.body" and not message.get("more_body", False)

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300

    def answer(self) -> Answer:
        """Status, content type and body: what an Idempotency-Key keeps. Not the other headers:
        the rate-limit ones would be stale on a replay, and the request id is the new one's."""
        start = self.messages[0]
        chunks = (m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        body = b"".join(chunks)
        content_type = Headers(raw=start.get("headers", [])).get("content-type")
        return Answer(self.status, content_type, body)

    async def send(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


class Meter:
    """The usage event of one request, timed from the step's start."""

    def __init__(self, context: RequestContext, principal: Principal) -> None:
        self.context = context
        self.principal = principal
        self.started = time.perf_counter()
        self.occurred_at = utcnow()

    def event(self, status: int, *, billable: bool, units: int) -> Event:
        context = self.context
        return Event(
            request_id=context.request_id,
            occurred_at=self.occurred_at,
            account_id=self.principal.account_id,
            key_id=self.principal.key_id,
            endpoint=context.metering.endpoint,
            model=context.model,
            status=status,
            chars=context.chars,
            units=units,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            billable=billable,
        )

    @staticmethod
    def kept(event: Event, key: str, answer: Answer) -> Completion:
        """The answer an Idempotency-Key keeps, committed with its event."""
        return Completion(event.account_id, key, event.request_id, answer, utcnow() + KEEP_ANSWERS)
