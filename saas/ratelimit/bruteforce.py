"""Counted guards: an identity (a client address, a key) that is counted too often within a
moving window is refused for the rest of it.

- `FailedAuthGuard` counts bad keys and unknown dashboard sessions per address (429), so that
  keys and session ids cannot be guessed at speed;
- `Guard("dashboard_writes", ...)` counts the dashboard's writes per key (saas/dashboard/auth.py).

Uses the `limits` library (moving window, shared through Redis when configured). Only what is
counted costs a Redis call (a good key costs none); an identity found over the limit is answered
from a local cache until its block lapses.
"""

import asyncio
import time

import structlog
from cachetools import TLRUCache
from limits import parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from saas.kit import metrics, redis_client

log = structlog.get_logger(__name__)


class Guard:
    def __init__(self, name: str, limit: str, redis_errors: Counter) -> None:
        self.name = name  # in its Redis keys and log lines
        self.item = parse(limit)
        self.redis_errors = redis_errors
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._deadline: float | None = None  # in process: nothing to wait for
        self._blocked: TLRUCache[str, float] = TLRUCache(
            maxsize=100_000, ttu=lambda _ip, until, _now: until, timer=time.monotonic
        )

    def use_redis(self, redis_url: str, prefix: str, timeout: float = 0.25) -> None:
        # `limits` spells the same URLs with `async+` in front (async+redis+cluster://h:p,h:p).
        kind = RedisClusterStorage if redis_client.is_cluster(redis_url) else RedisStorage
        storage: Storage = kind(
            f"async+{redis_url}",
            implementation="redispy",
            key_prefix=f"{prefix}:{self.name}",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._limiter = MovingWindowRateLimiter(storage)
        # The cluster client retries with backoff on its own: what this guards must not wait
        # through a failover for a count.
        self._deadline = 2 * timeout

    def blocked_for(self, identity: str) -> float | None:
        """Seconds this identity stays blocked, or None."""
        until = self._blocked.get(identity)
        return None if until is None else max(0.0, until - time.monotonic())

    async def count(self, identity: str) -> float | None:
        """Count one; returns the block length when this one crossed the limit (it is refused).
        Redis unreachable: not counted (what is guarded goes on: a 401 stands, a write is made)."""
        try:
            async with asyncio.timeout(self._deadline):
                if await self._limiter.hit(self.item, identity):
                    return None
                stats = await self._limiter.get_window_stats(self.item, identity)
        except Exception as exc:  # noqa: BLE001 - only the counting is lost
            self.redis_errors.inc()
            log.warning("guard_count_failed", guard=self.name, error=type(exc).__name__)
            return None
        seconds = max(1.0, stats.reset_time - time.time())
        self._blocked[identity] = time.monotonic() + seconds
        log.warning("guard_blocked", guard=self.name, identity=identity, seconds=round(seconds))
        return seconds


class FailedAuthGuard(Guard):
    """Bad keys (API and dashboard sign-in) and unknown session ids, per client address."""

    def __init__(self, limit: str) -> None:
        super().__init__("authfail", limit, metrics.REDIS_ERRORS_AUTH_GUARD)

    async def record_failure(self, ip: str) -> float | None:
        return await self.count(ip)
