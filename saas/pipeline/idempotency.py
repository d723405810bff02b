"""`Idempotency-Key` on billable POSTs under /v1 (as Stripe does): a retry of a billed request
gets the stored answer again (`Idempotent-Replayed: true`) instead of running and being billed
twice. The admission step (saas/pipeline/admission.py) asks `IdempotencyKeys.settle` before
admitting: the answer to replay (admitted as one request of the rate limit, never of the quota:
a replay costs a database read, which a client must not repeat without bound), a refusal, or the
key's claim to run the request under. Only 2xx answers are kept, committed with the usage event
in one transaction: an error is not billed and not kept, so its retry runs again.

Duplicates running at once: in one worker they wait for the first request's outcome (a future
per key); across workers and hosts the database claim decides (saas/idempotency/store.py) and
the others poll it, up to `wait` seconds, then get 409 with Retry-After."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Engine
from starlette.responses import Response

from saas import problems
from saas.idempotency import store
from saas.idempotency.store import Answer
from saas.kit.db import utcnow
from saas.problems.responses import json_error

log = structlog.get_logger(__name__)
HEADER = b"idempotency-key"
FIRST_POLL, LAST_POLL = 0.02, 0.5  # seconds between looks at another worker's claim


@dataclass(slots=True)
class InFlight:
    """A request of this worker holding a key: its duplicates here wait for its outcome."""

    fingerprint: str
    outcome: "asyncio.Future[Answer | None]"


@dataclass(slots=True)
class Claim:
    """The key this request holds while it runs (renewed, so a long batch is not taken over by a
    retry on another worker). `end` once answered: with the kept 2xx answer (committed with the
    usage event), or None to release the key so a retry runs again."""

    keys: "IdempotencyKeys"
    account_id: int
    key: str
    request_id: str
    in_flight: InFlight
    holding: "asyncio.Task[None] | None" = field(default=None)

    async def end(self, answer: Answer | None) -> None:
        if self.holding is not None:
            self.holding.cancel()
        del self.keys.in_flight[(self.account_id, self.key)]
        try:
            if answer is None:
                await self.keys.release(self)
        finally:  # the duplicates waiting in this worker learn the outcome in any case
            self.in_flight.outcome.set_result(answer)


def key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == HEADER:
            return value.decode("latin-1")
    return None


def replay(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"}
    return Response(answer.body, answer.status, headers, media_type=answer.content_type)


def mismatch(key: str) -> Response:
    detail = (
        f"Idempotency-Key {key!r} was already used with another request (a different body,"
        " endpoint or model); send a new key for a new request."
    )
    return json_error(problems.IDEMPOTENCY_KEY_REUSED, detail)


def still_running(key: str, retry_after: int) -> Response:
    detail = (
        f"A request with Idempotency-Key {key!r} is still running; retry in {retry_after} s"
        " to get its answer."
    )
    return json_error(problems.IDEMPOTENCY_KEY_IN_USE, detail, {"Retry-After": str(retry_after)})


class IdempotencyKeys:
    def __init__(self, engine: Engine, *, lease: float, wait: float) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease)  # how long a claim holds if its worker dies
        self.wait = wait
        self.in_flight: dict[tuple[int, str], InFlight] = {}

    async def settle(
        self, *, account_id: int, key: str, fingerprint: str, request_id: str
    ) -> Claim | Answer | Response:
        """The key's claim to run the request under, the stored answer to replay, or a refusal
        (400 invalid key, 409 still running, 422 reused, 503 database down)."""
        if not store.valid_key(key):
            detail = "Idempotency-Key must be 1 to 255 printable ASCII characters."
            return json_error(problems.INVALID_IDEMPOTENCY_KEY, detail)
        slot = (account_id, key)
        deadline = time.monotonic() + self.wait
        pause = FIRST_POLL
        while True:
            local = self.in_flight.get(slot)
            if local is not None:  # the same key runs in this worker: share its outcome
                if local.fingerprint != fingerprint:
                    return mismatch(key)
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        answer = await asyncio.shield(local.outcome)
                except TimeoutError:
                    return still_running(key, 1)
                if answer is not None:
                    return answer
                continue  # it ended without an answer: try to claim the key
            now = utcnow()
            try:
                found = await asyncio.to_thread(
                    store.claim,
                    self.engine,
                    account_id=account_id,
                    key=key,
                    fingerprint=fingerprint,
                    request_id=request_id,
                    now=now,
                    lease=self.lease,
                )
            except Exception as exc:  # noqa: BLE001 - without the database nothing is billed
                log.error("idempotency_claim_failed", error=type(exc).__name__)
                detail = "Idempotency keys are temporarily unavailable; retry shortly."
                return json_error(problems.IDEMPOTENCY_UNAVAILABLE, detail, {"Retry-After": "1"})
            if found is None:
                return self._hold(slot, fingerprint, request_id)
            if found.fingerprint != fingerprint:
                return mismatch(key)
            if found.answer is not None:
                return found.answer
            # Another worker or host runs it: look again until it ends or its lease does.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                lease_left = (found.expires_at - now).total_seconds()
                return still_running(key, max(1, min(int(lease_left) + 1, 60)))
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, LAST_POLL)

    def _hold(self, slot: tuple[int, str], fingerprint: str, request_id: str) -> Claim:
        outcome: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        in_flight = self.in_flight[slot] = InFlight(fingerprint, outcome)
        claim = Claim(self, slot[0], slot[1], request_id, in_flight)
        claim.holding = asyncio.create_task(self._renew(claim))
        return claim

    async def _renew(self, claim: Claim) -> None:
        """Renew the claim every third of its lease while the request runs: a request longer
        than the lease must not be taken over by a retry on another worker, run again and billed
        twice. The lease only ends a dead worker's claim."""
        every = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self._write(store.renew, claim, until=utcnow() + self.lease)
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                log.warning("idempotency_renew_failed", error=type(exc).__name__)

    async def release(self, claim: Claim) -> None:
        try:
            await self._write(store.release, claim)
        except Exception as exc:  # noqa: BLE001 - the claim's lease ends it anyway
            log.error("idempotency_release_failed", error=type(exc).__name__)

    async def _write(self, write: Callable[..., object], claim: Claim, **more: Any) -> None:
        """`write` (store.renew, store.release) of the claim's row, off the event loop."""
        await asyncio.to_thread(
            write,
            self.engine,
            account_id=claim.account_id,
            key=claim.key,
            request_id=claim.request_id,
            **more,
        )
