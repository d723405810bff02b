"""Group commit of usage events.

A billable request waits until its event is committed before its answer is sent; events of
concurrent requests share one transaction. The writer takes everything queued since its last
commit, so a lone request is written at once and a crowd is written together. Non-billable
events (rejections, listings) are queued without waiting. Only the committed events of accounts
that want quota alerts (`watch`) are handed on, so other accounts cost no query per commit.
"""

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine

from saas.idempotency.store import Completion
from saas.kit import metrics
from saas.usage.ledger import Event, write_events

log = structlog.get_logger(__name__)


class UsageWriteFailed(Exception):
    """The event could not be committed: the request must not be answered as a success."""


@dataclass(slots=True)
class Pending:
    """An event waiting for the next commit."""

    event: Event
    waiter: asyncio.Future[None] | None  # durable events only: their request waits on it
    watch: bool  # handed to on_committed (quota alerts) once committed
    answer: Completion | None  # the Idempotency-Key answer committed with it


class UsageRecorder:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 1000,
        on_committed: Callable[[list[Event]], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.on_committed = on_committed
        self.commits = 0
        self._pending: list[Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._followups: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def record(
        self,
        event: Event,
        *,
        durable: bool,
        watch: bool = False,
        answer: Completion | None = None,
    ) -> None:
        """Queue the event; with `durable`, return only once it is committed. With `watch`, the
        event goes to `on_committed` once committed (if it was new). `answer` (durable events
        only) is stored in the same transaction."""
        future = asyncio.get_running_loop().create_future() if durable else None
        self._pending.append(Pending(event, future, watch, answer))
        metrics.USAGE_EVENTS_QUEUED.inc()
        self._wakeup.set()
        if future is not None:
            await future

    async def _run(self) -> None:
        while not (self._closing and not self._pending):
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[Pending]) -> None:
        events = [pending.event for pending in batch]
        answers = [pending.answer for pending in batch if pending.answer is not None]
        started = time.perf_counter()
        try:
            new = await asyncio.to_thread(write_events, self.engine, events, answers)
        except Exception as exc:  # noqa: BLE001 - every waiter learns of it
            metrics.DATABASE_ERRORS_USAGE.inc()
            log.error("usage_write_failed", events=len(events), error=type(exc).__name__)
            for pending in batch:
                if pending.waiter is None:
                    metrics.USAGE_EVENTS_DROPPED.inc()
                elif not pending.waiter.done():
                    pending.waiter.set_exception(UsageWriteFailed(str(exc)))
            return
        metrics.USAGE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        self.commits += 1
        for pending in batch:
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.set_result(None)
        watched = {pending.event.request_id for pending in batch if pending.watch}
        new = [event for event in new if event.request_id in watched]
        if self.on_committed is not None and new:
            # In its own task: quota alerts must never hold up the next commit.
            task = asyncio.create_task(self.on_committed(new))
            self._followups.add(task)
            task.add_done_callback(self._followups.discard)

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._followups:
            await asyncio.gather(*self._followups, return_exceptions=True)
