"""Failed-authentication guard: a client IP that presents too many bad keys is refused (429)
for the rest of the moving window, so keys cannot be guessed at speed.

Uses the `limits` library (moving window, shared through Redis when configured). Only failures
are counted, so a request with a good key costs no extra Redis call; a blocked IP is answered
from a local cache until its block lapses.
"""

import asyncio
import time

import structlog
from cachetools import TLRUCache
from limits import parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from saas import metrics, redis_client

log = structlog.get_logger(__name__)


class FailedAuthGuard:
    def __init__(self, limit: str) -> None:
        self.item = parse(limit)
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
            key_prefix=f"{prefix}:authfail",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._limiter = MovingWindowRateLimiter(storage)
        # The cluster client retries with backoff on its own: a bad key's 401 must not wait
        # through a failover for a count that only guards against guessing.
        self._deadline = 2 * timeout

    def blocked_for(self, ip: str) -> float | None:
        """Seconds this IP stays blocked, or None."""
        until = self._blocked.get(ip)
        return None if until is None else max(0.0, until - time.monotonic())

    async def record_failure(self, ip: str) -> float | None:
        """Count a failed attempt; returns the block length when this one crossed the limit."""
        try:
            async with asyncio.timeout(self._deadline):
                if await self._limiter.hit(self.item, ip):
                    return None
                stats = await self._limiter.get_window_stats(self.item, ip)
        except Exception as exc:  # noqa: BLE001 - the 401 stands; only the counting is lost
            metrics.REDIS_ERRORS_AUTH_GUARD.inc()
            log.warning("auth_failure_count_failed", error=type(exc).__name__)
            return None
        seconds = max(1.0, stats.reset_time - time.time())
        self._blocked[ip] = time.monotonic() + seconds
        log.warning("auth_failures_blocked", ip=ip, seconds=round(seconds))
        return seconds
