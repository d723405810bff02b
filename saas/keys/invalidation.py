"""Cache invalidation on every worker and host: a revoked key, a suspended account or a changed
plan takes effect everywhere within a second.

The worker that made the change applies it to its own caches at once and publishes it on a Redis
pub/sub channel; every worker listens and applies what it hears. If the subscription breaks,
messages may have been missed, so a worker that reconnects clears its caches. The caches' TTL
(SAAS_KEY_CACHE_TTL) stays the backstop. Without Redis there is one process: local is everything.
"""

import asyncio

import orjson
import structlog
from redis.asyncio import Redis

from saas.keys.authenticator import KeyAuthenticator
from saas.ratelimit.admission import Admission

log = structlog.get_logger(__name__)


class Invalidator:
    def __init__(self, authenticator: KeyAuthenticator, admission: Admission) -> None:
        self.authenticator = authenticator
        self.admission = admission
        self.redis: Redis | None = None
        self.channel = ""
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def apply(self, kind: str, value: str | int) -> None:
        if kind == "key":
            self.authenticator.forget(str(value))
        elif kind == "account":
            self.authenticator.clear()  # entries are keyed by key hash: drop them all (rare)
            self.admission.forget(int(value))
        elif kind == "plan":
            self.authenticator.clear()
            self.admission.forget_all()

    async def publish(self, kind: str, value: str | int) -> None:
        """Call after the change is committed."""
        self.apply(kind, value)
        if self.redis is None:
            return
        try:
            await self.redis.publish(self.channel, orjson.dumps({"kind": kind, "value": value}))
        except Exception as exc:  # noqa: BLE001 - the TTL still bounds how long others lag
            log.error("invalidation_publish_failed", kind=kind, error=type(exc).__name__)

    def start(self, redis_url: str, prefix: str) -> None:
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self.channel = f"{prefix}:invalidate"
        self._listener = asyncio.create_task(self._listen(redis_url))

    async def _listen(self, redis_url: str) -> None:
        delay = 0.2
        while True:
            client = Redis.from_url(redis_url, socket_connect_timeout=1.0)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if self.subscribed.is_set():  # a reconnect: we may have missed messages
                        self.authenticator.clear()
                        self.admission.forget_all()
                    self.subscribed.set()
                    delay = 0.2
                    async for message in pubsub.listen():
                        data = orjson.loads(message["data"])
                        self.apply(data["kind"], data["value"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff
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


def publish_from_cli(redis_url: str | None, prefix: str, kind: str, value: str | int) -> bool:
    """For the CLI, which has no event loop or caches of its own: tell the running workers."""
    if not redis_url:
        return False
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        client.publish(f"{prefix}:invalidate", orjson.dumps({"kind": kind, "value": value}))
        return True
    finally:
        client.close()
