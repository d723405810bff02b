"""One Redis round trip for the admission scripts of many concurrent requests.

Each request's admission is one EVALSHA. Sent one by one, each costs the event loop a pool
checkout, a socket write, a read wakeup and redis-py's bookkeeping: measured, more than the rest
of authentication and admission together. Here the calls queued while the event loop runs are
sent as one pipeline, and the next pipeline leaves as soon as the last one is answered (a group
commit: a lone request goes at once, a crowd shares a round trip). Each script still runs on its
own, atomically; only the transport is shared.

A pipeline out for longer than `stalled_after` (a stuck socket, not a slow script: Redis answers
in well under a millisecond here) no longer holds the others: the next one leaves on another
connection, up to `max_in_flight`. A call whose caller gave up before it was sent is dropped, so
it never counts; one already sent may have run, as with a call cancelled in flight before. The
pool's one retry after a broken connection resends a whole pipeline, as it resent one call
before (a pipeline that broke before Redis read it ran nothing).

Hand-written because redis-py's pipelines run `SCRIPT EXISTS` before every pipeline that holds a
Script object (one more round trip each time); this sends EVALSHA and loads the script only when
Redis answers NOSCRIPT (after a restart), then sends those calls again (a NOSCRIPT call never
ran, so sending it again cannot count twice).

One node only: a Redis Cluster client sends each call to its own slot's master (see
saas/kit/redis_client.py), one by one.
"""

import asyncio
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Call = tuple[list[str], list[int]]  # (keys, args) of one script call
Queued = tuple[Call, "asyncio.Future[Any]"]


class ScriptPipeline:
    def __init__(
        self,
        redis: Redis,
        script: str,
        *,
        max_batch: int = 256,
        max_in_flight: int = 4,
        stalled_after: float = 0.02,
    ) -> None:
        self.redis = redis
        self.script = script
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.stalled_after = stalled_after
        self._sha: str | None = None
        self._queued: list[Queued] = []
        self._flush_scheduled = False
        # The pipelines out, with their calls (and strong references to the tasks, as asyncio asks).
        self._in_flight: dict[asyncio.Task[None], list[Queued]] = {}
        self._last_sent = 0.0

    async def call(self, keys: list[str], args: list[int]) -> Any:
        """The script's answer to this call. A caller that stops waiting (a timeout) before its
        call is sent takes it out; once sent, it may have run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append(((keys, args), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Not at once: the other requests this turn of the event loop started join it.
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    async def load(self) -> None:
        """Load the script before the first call needs it."""
        self._sha = await self.redis.script_load(self.script)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._queued = [queued for queued in self._queued if not queued[1].done()]
        if not self._queued:
            return
        if self._in_flight:
            stalled = time.monotonic() - self._last_sent >= self.stalled_after
            if not stalled or len(self._in_flight) >= self.max_in_flight:
                return  # sent when a pipeline in flight is answered, or found stalled
        batch = self._queued[: self.max_batch]
        del self._queued[: self.max_batch]
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._send(batch))
        self._in_flight[task] = batch
        task.add_done_callback(self._sent)
        self._last_sent = time.monotonic()
        loop.call_later(self.stalled_after, self._flush)

    def _sent(self, task: "asyncio.Task[None]") -> None:
        batch = self._in_flight.pop(task, [])
        if task.cancelled():
            # Shutting down (perhaps before the task's first step): the waiters fail as on a
            # lost connection, so their fallback applies; they are not cancelled themselves.
            _fail(batch, RedisConnectionError("admission pipeline cancelled"))
        self._flush()

    async def _send(self, batch: list[Queued]) -> None:
        batch = [queued for queued in batch if not queued[1].done()]
        if not batch:
            return
        try:
            results = await self._execute([call for call, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter learns of it
            _fail(batch, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
                future.exception()
            else:
                future.set_result(result)

    async def _execute(self, calls: list[Call]) -> list[Any]:
        """One answer per call: its result, or the exception it alone met."""
        if self._sha is None:
            await self.load()
        results = await self._pipeline(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # Redis restarted or was flushed since the script was loaded
            try:
                await self.load()
                again = await self._pipeline([calls[i] for i in missing])
            except Exception as exc:  # noqa: BLE001 - only the calls that did not run fail
                again = [exc] * len(missing)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        assert self._sha is not None
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


def _fail(batch: list[Queued], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
            future.exception()  # retrieved: a waiter that gave up never reads it
