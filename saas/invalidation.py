"""Cache invalidation on every worker and host: a revoked key, a suspended account or a changed
plan takes effect everywhere within a second.

Committed changes (saas/changes.py) go to `Invalidator.publish` (a server) or `publish_sync`
(the CLI).

The worker that made the change applies it to its own caches at once and publishes it on a Redis
pub/sub channel; every worker listens and applies what it hears. If the subscription breaks,
messages may have been missed, so a worker that reconnects forgets everything. The caches' TTL
(SAAS_KEY_CACHE_TTL) stays the backstop. Without Redis there is one process: local is everything.
"""

import asyncio
from collections.abc import Callable

import redis
import structlog
from redis.asyncio import Redis

from saas import metrics
from saas.changes import EVERYTHING, Change

log = structlog.get_logger(__name__)


def channel_name(prefix: str) -> str:
    return f"{prefix}:invalidate"


class Invalidator:
    def __init__(self, apply: Callable[[Change], None]) -> None:
        self.apply = apply  # forgets what a change makes stale in this worker's caches
        self.redis: Redis | None = None
        self.channel = ""
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def publish(self, change: Change) -> None:
        """Call after the change is committed."""
        self.apply(change)
        if self.redis is None:
            return
        try:
            await self.redis.publish(self.channel, change.encode())
        except Exception as exc:  # noqa: BLE001 - the TTL still bounds how long others lag
            metrics.REDIS_ERRORS_INVALIDATION.inc()
            log.error("invalidation_publish_failed", kind=change.kind, error=type(exc).__name__)

    def start(self, redis_url: str, prefix: str) -> None:
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self.channel = channel_name(prefix)
        self._listener = asyncio.create_task(self._listen(redis_url))

    async def _listen(self, redis_url: str) -> None:
        delay = 0.2
        while True:
            client = Redis.from_url(redis_url, socket_connect_timeout=1.0)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if self.subscribed.is_set():  # a reconnect: we may have missed messages
                        self.apply(EVERYTHING)
                    self.subscribed.set()
                    delay = 0.2
                    async for message in pubsub.listen():
                        self.apply(Change.decode(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff
                metrics.REDIS_ERRORS_INVALIDATION.inc()
                log.warning("invalidation_listener_reconnecting", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                await client.aclose()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()


def publish_sync(redis_url: str, prefix: str, changes: list[Change]) -> None:
    """For the CLI, which has no event loop or caches of its own: tell the running workers."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        for change in changes:
            client.publish(channel_name(prefix), change.encode())
    finally:
        client.close()
