"""`Idempotency-Key` on POSTs under /v1 (as Stripe does): a retry of a billed request gets the
stored answer again (`Idempotent-Replayed: true`) instead of running and being billed twice.

Runs after authentication (keys belong to an account) and before metering and admission, so a
replay uses no quota and is not billed again (it is not a usage event either: it ran nothing).
It does count as one request of the plan's rate limit, with its headers: a replay costs a
database read, which a client must not be able to repeat without bound.

Only 2xx answers are kept, written with the usage event in one transaction
(saas/pipeline/usage.py): an error is not billed and not kept, so its retry runs again.

Duplicates running at once: in one worker they wait for the first request's outcome (a future
per key); across workers and hosts the database claim decides (saas/idempotency/store.py) and
the others poll it, up to `wait` seconds, then get 409 with Retry-After."""

import asyncio
import time
from datetime import timedelta

import structlog
from sqlalchemy import Engine
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas import problems
from saas.auth.principal import Principal
from saas.idempotency import store
from saas.idempotency.store import Answer
from saas.kit.db import utcnow
from saas.pipeline.admission import rejection, standing_headers
from saas.pipeline.batch_body import read_body
from saas.pipeline.body_limit import BodyRefused
from saas.problems.responses import json_error
from saas.ratelimit.admission import Admission, LimiterUnavailable
from saas.ratelimit.headers import rate_limit_headers
from saas.web.context import UNROUTED, Area, RequestContext, app_path, context_of

log = structlog.get_logger(__name__)
HEADER = "idempotency-key"
FIRST_POLL, LAST_POLL = 0.02, 0.5  # seconds between looks at another worker's claim

InFlight = tuple[str, "asyncio.Future[Answer | None]"]  # fingerprint, outcome


def replay(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"}
    return Response(answer.body, answer.status, headers, media_type=answer.content_type)


async def admitted_replay(admission: Admission, principal: Principal, answer: Answer) -> Response:
    """The stored answer, as one request of the plan's rate limit (never of its quota)."""
    try:
        decision = await admission.admit(principal.account_id, principal.rate_limit, quota=None)
    except LimiterUnavailable:  # failing closed; what is stored was billed already
        return replay(answer)
    if not decision.admitted:
        return rejection(decision)
    response = replay(answer)
    response.raw_headers.extend(rate_limit_headers(decision))
    return response


def mismatch(key: str) -> Response:
    detail = (
        f"Idempotency-Key {key!r} was already used with another request (a different body,"
        " endpoint or model); send a new key for a new request."
    )
    return json_error(problems.IDEMPOTENCY_KEY_REUSED, detail)


class IdempotencyMiddleware:
    def __init__(
        self, app: ASGIApp, *, engine: Engine, admission: Admission, lease: float, wait: float
    ) -> None:
        self.app = app
        self.engine = engine
        self.admission = admission
        self.lease = timedelta(seconds=lease)  # how long a claim holds if its worker dies
        self.wait = wait
        self.in_flight: dict[tuple[int, str], InFlight] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = context_of(scope)
        key = Headers(scope=scope).get(HEADER) if scope["type"] == "http" else None
        if (
            key is None
            or context is None
            or context.principal is None
            or context.area is not Area.customer
            or scope["method"] != "POST"
            or context.metering is UNROUTED  # the router answers 404/405
        ):
            await self.app(scope, receive, send)
            return
        if not context.metering.billable:
            # POST /v1/keys: its answer holds a key shown once, which must never be stored, so
            # the header is ignored there (clients send it on every POST).
            await self.app(scope, receive, send)
            return
        blocked = self.admission.cached_rejection(context.principal.account_id, with_quota=False)
        if blocked is not None:  # rate limited: a replay would be refused too, without a read
            await rejection(blocked)(scope, receive, send)
            return
        response: Response | None
        if not store.valid_key(key):
            detail = "Idempotency-Key must be 1 to 255 printable ASCII characters."
            response = json_error(problems.INVALID_IDEMPOTENCY_KEY, detail)
        else:
            try:
                body, receive = await read_body(receive)
            except BodyRefused as exc:  # over the size limit, or too slow (408)
                response = exc.response()
            else:
                path = app_path(scope)  # the same request directly or through the proxy
                fingerprint = store.fingerprint(scope["method"], path, scope["query_string"], body)
                response = await self._settle(context, key, fingerprint, scope, receive, send)
        if response is not None:
            if not response.headers.get("idempotent-replayed") and response.status_code >= 400:
                await self._add_limits(context, response)
            await response(scope, receive, send)

    async def _add_limits(self, context: RequestContext, response: Response) -> None:
        """This step's own refusals (400, 408, 409, 413, 422, 503) carry the rate-limit headers
        as they stand, like every authenticated answer (a read that counts nothing)."""
        principal = context.principal
        assert principal is not None
        if response.headers.get("x-ratelimit-limit"):  # a 429 from the limiter has them
            return
        response.raw_headers.extend(
            await standing_headers(self.admission, principal.account_id, principal.rate_limit)
        )

    async def _settle(
        self,
        context: RequestContext,
        key: str,
        fingerprint: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> Response | None:
        """Run the request as the key's holder (None: it answered), or the answer to send."""
        assert context.principal is not None
        slot = (context.principal.account_id, key)
        deadline = time.monotonic() + self.wait
        pause = FIRST_POLL
        while True:
            local = self.in_flight.get(slot)
            if local is not None:  # the same key runs in this worker: share its outcome
                if local[0] != fingerprint:
                    return mismatch(key)
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        answer = await asyncio.shield(local[1])
                except TimeoutError:
                    return still_running(key, 1)
                if answer is not None:
                    return await admitted_replay(self.admission, context.principal, answer)
                continue  # it ended without an answer: try to claim the key
            now = utcnow()
            try:
                found = await asyncio.to_thread(
                    store.claim,
                    self.engine,
                    account_id=slot[0],
                    key=key,
                    fingerprint=fingerprint,
                    request_id=context.request_id,
                    now=now,
                    lease=self.lease,
                )
            except Exception as exc:  # noqa: BLE001 - without the database nothing is billed
                log.error("idempotency_claim_failed", error=type(exc).__name__)
                detail = "Idempotency keys are temporarily unavailable; retry shortly."
                return json_error(problems.IDEMPOTENCY_UNAVAILABLE, detail, {"Retry-After": "1"})
            if found is None:
                await self._run(context, slot, fingerprint, scope, receive, send)
                return None
            if found.fingerprint != fingerprint:
                return mismatch(key)
            if found.answer is not None:
                return await admitted_replay(self.admission, context.principal, found.answer)
            # Another worker or host runs it: look again until it ends or its lease does.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                lease_left = (found.expires_at - now).total_seconds()
                return still_running(key, max(1, min(int(lease_left) + 1, 60)))
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, LAST_POLL)

    async def _run(
        self,
        context: RequestContext,
        slot: tuple[int, str],
        fingerprint: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer the request while holding the key's claim; release it unless a 2xx answer
        went out (then metering committed that answer with the usage event)."""
        outcome: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self.in_flight[slot] = (fingerprint, outcome)
        context.idempotency_key = slot[1]
        status, content_type, chunks = 0, None, []

        async def keep(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = Headers(raw=message.get("headers", [])).get("content-type")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        answer = None
        holding = asyncio.create_task(self._hold(slot, context.request_id))
        try:
            await self.app(scope, receive, keep)
        finally:
            holding.cancel()
            del self.in_flight[slot]
            if 200 <= status < 300:
                answer = Answer(status, content_type, b"".join(chunks))
            else:
                await self._release(slot, context.request_id)
            outcome.set_result(answer)

    async def _hold(self, slot: tuple[int, str], request_id: str) -> None:
        """Renew the claim every third of its lease while the request runs: a request longer
        than the lease (a batch of long texts) must not be taken over by a retry on another
        worker, run again and billed twice. The lease only ends a dead worker's claim."""
        every = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(
                    store.renew,
                    self.engine,
                    account_id=slot[0],
                    key=slot[1],
                    request_id=request_id,
                    until=utcnow() + self.lease,
                )
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                log.warning("idempotency_renew_failed", error=type(exc).__name__)

    async def _release(self, slot: tuple[int, str], request_id: str) -> None:
        try:
            await asyncio.to_thread(
                store.release, self.engine, account_id=slot[0], key=slot[1], request_id=request_id
            )
        except Exception as exc:  # noqa: BLE001 - the claim's lease ends it anyway
            log.error("idempotency_release_failed", error=type(exc).__name__)


def still_running(key: str, retry_after: int) -> Response:
    detail = (
        f"A request with Idempotency-Key {key!r} is still running; retry in {retry_after} s"
        " to get its answer."
    )
    return json_error(problems.IDEMPOTENCY_KEY_IN_USE, detail, {"Retry-After": str(retry_after)})
