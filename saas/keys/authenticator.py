"""Key lookups behind a bounded local TTL cache, and batched `last_used_at` writes.

A steady stream of requests with one key costs no database work until its cache entry expires;
misses (unknown keys) are cached too, in their own smaller cache, so a flood of made-up keys can
neither hammer the database nor push real keys out of the cache. Concurrent misses for the same
key share one query. Keys that authenticated recently are remembered for longer (`vouches_for`),
so an address the failed-key guard blocks does not shut out the good keys used from it.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

import structlog
from cachetools import TTLCache
from sqlalchemy import Engine

from saas.auth import key_format
from saas.auth.principal import Principal
from saas.keys.service import lookup_principal, record_last_used
from saas.kit import metrics
from saas.kit.db import utcnow

log = structlog.get_logger(__name__)


class KeyAuthenticator:
    def __init__(
        self,
        engine: Engine,
        *,
        ttl: float,
        max_size: int,
        flush_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        vouch_seconds: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.flush_seconds = flush_seconds
        # `clock` ages the cache entries; tests pass one they advance instead of sleeping.
        self._hits: TTLCache[str, Principal] = TTLCache(maxsize=max_size, ttl=ttl, timer=clock)
        self._misses: TTLCache[str, bool] = TTLCache(
            maxsize=max(max_size // 4, 1), ttl=ttl, timer=clock
        )
        # Hashes of keys that were usable when last looked up; outlives the principal cache so
        # a good key keeps passing a blocked address after its cached principal expired.
        self._vouched: TTLCache[str, bool] = TTLCache(
            maxsize=max_size, ttl=vouch_seconds, timer=clock
        )
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self._last_used: dict[int, datetime] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def lookup(self, key: str) -> Principal | None:
        """The key's principal (possibly revoked or expired: the caller says why), or None."""
        return await self.lookup_hash(key_format.hash_key(key))

    async def lookup_hash(self, key_hash: str) -> Principal | None:
        """The same, by the key's hash (a dashboard session knows its key by that only)."""
        principal = self._hits.get(key_hash)
        if principal is not None:
            metrics.KEY_CACHE_HIT.inc()
            return principal
        if key_hash in self._misses:
            metrics.KEY_CACHE_HIT.inc()
            return None
        metrics.KEY_CACHE_MISS.inc()
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            principal = await asyncio.to_thread(lookup_principal, self.engine, key_hash)
        except BaseException as exc:
            if isinstance(exc, Exception):
                metrics.DATABASE_ERRORS_KEYS.inc()
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(principal)
        finally:
            del self._inflight[key_hash]
        if principal is None:
            self._misses[key_hash] = True
        else:
            self._hits[key_hash] = principal
        return principal

    def vouch(self, key_hash: str, authenticated: bool) -> None:
        """Remember whether the key just authenticated (usable key, active account)."""
        if authenticated:
            self._vouched[key_hash] = True
        else:
            self._vouched.pop(key_hash, None)

    def vouches_for(self, key_hash: str) -> bool:
        """Whether this worker saw the key authenticate within the last `vouch_seconds`: then
        it is worth a lookup even from an address the failed-key guard blocks (no database
        work to decide; the lookup still checks the key as usual)."""
        return key_hash in self._vouched

    def forget(self, key_hash: str) -> None:
        self._hits.pop(key_hash, None)
        self._misses.pop(key_hash, None)

    def clear(self) -> None:
        self._hits.clear()
        self._misses.clear()

    def touch(self, key_id: int) -> None:
        """Remember that a key was used; written with the next batch."""
        self._last_used[key_id] = utcnow()

    async def flush_last_used(self) -> None:
        batch, self._last_used = self._last_used, {}
        if not batch:
            return
        try:
            await asyncio.to_thread(record_last_used, self.engine, batch)
        except Exception:
            metrics.DATABASE_ERRORS_KEYS.inc()
            log.exception("last_used_flush_failed", keys=len(batch))
            for key_id, used_at in batch.items():  # keep them for the next attempt
                self._last_used.setdefault(key_id, used_at)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush_last_used()

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_last_used()
