"""One Redis round trip for the admission scripts of many concurrent requests.

Each request's admission is one EVALSHA. Sent one by one, each costs the event loop a pool
checkout, a socket write, a read wakeup and redis-py's bookkeeping: measured, more than the rest
of authentication and admission together. Here the calls queued while the event loop runs are
sent as one pipeline, and the next pipeline leaves as soon as the last one is answered (a group
commit: a lone request goes at once, a crowd shares a round trip). Each script still runs on its
own, atomically, in the order the requests asked; only the transport is shared.

Hand-written because redis-py's pipelines run `SCRIPT EXISTS` before every pipeline that holds a
Script object (one more round trip each time); this sends EVALSHA and loads the script only when
Redis answers NOSCRIPT (after a restart), then sends those calls again (a NOSCRIPT call never
ran, so sending it again cannot count twice).

One node only: a Redis Cluster client sends each call to its own slot's master (see
saas/redis_client.py), one by one.
"""

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

Call = tuple[list[str], list[int]]  # (keys, args) of one script call


class ScriptPipeline:
    def __init__(self, redis: Redis, script: str, *, max_batch: int = 256) -> None:
        self.redis = redis
        self.script = script
        self.max_batch = max_batch
        self._sha: str | None = None
        self._queued: list[tuple[Call, asyncio.Future[Any]]] = []
        self._sending = False

    async def call(self, keys: list[str], args: list[int]) -> Any:
        """The script's answer to this call. Cancelling the wait (a timeout) leaves the call in
        its pipeline: like a call cancelled while in flight, it may have run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append(((keys, args), future))
        if not self._sending:
            self._sending = True
            # Not at once: the other requests this turn of the event loop started join it.
            asyncio.get_running_loop().call_soon(self._send_next)
        return await future  # cancelled by a timeout: _send skips it

    def _send_next(self) -> None:
        if not self._queued:
            self._sending = False
            return
        batch = self._queued[: self.max_batch]
        del self._queued[: self.max_batch]
        task = asyncio.get_running_loop().create_task(self._send(batch))
        task.add_done_callback(lambda _: self._send_next())

    async def _send(self, batch: list[tuple[Call, "asyncio.Future[Any]"]]) -> None:
        try:
            results = await self._execute([call for call, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every waiter learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: a waiter that timed out never reads it
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
                future.exception()
            else:
                future.set_result(result)

    async def load(self) -> None:
        """Load the script before the first call needs it."""
        self._sha = await self.redis.script_load(self.script)

    async def _execute(self, calls: list[Call]) -> list[Any]:
        if self._sha is None:
            await self.load()
        results = await self._pipeline(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # Redis restarted or was flushed since the script was loaded
            await self.load()
            again = await self._pipeline([calls[i] for i in missing])
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
