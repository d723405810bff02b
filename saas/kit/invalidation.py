"""Cache invalidation on every worker and host: a revoked key, a suspended account or a changed
plan takes effect everywhere within a second.

Committed changes (saas/kit/changes.py) go to `Invalidator.publish` (a server) or `publish_sync`
(the CLI).

The worker that made the change applies it to its own caches at once and publishes it on a Redis
pub/sub channel; every worker listens and applies what it hears. If the subscription breaks,
messages may have been missed, so a worker that reconnects forgets everything. The caches' TTL
(SAAS_KEY_CACHE_TTL) stays the backstop. Without Redis there is one process: local is everything.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from saas.kit import metrics, redis_client
from saas.kit.changes import EVERYTHING, Change

log = structlog.get_logger(__name__)
# The subscribed node is PINGed after this many quiet seconds, and left for another after this
# many without a word (a message or a PONG).
PING_SECONDS = 2.0
SILENT_NODE_SECONDS = 5.0
STOP_SECONDS = 2.0  # the most stop() waits for the listener, then for the client


def channel_name(prefix: str) -> str:
    return f"{prefix}:invalidate"


class Invalidator:
    def __init__(self, apply: Callable[[Change], None]) -> None:
        self.apply = apply  # forgets what a change makes stale in this worker's caches
        self.redis: redis_client.Client | None = None
        self.channel = ""
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.node_port: int | None = None  # of the node subscribed through (for tests, logs)

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
        self.redis = redis_client.connect(redis_url, timeout=1.0, max_connections=4)
        self.channel = channel_name(prefix)
        self._listener = asyncio.create_task(self._listen(redis_url))

    async def _listen(self, redis_url: str) -> None:
        """Subscribed through one node (on a cluster, every node hears every PUBLISH); when
        that node fails or goes silent, through the next one."""
        delay = 0.2
        attempt = 0
        while True:
            client: Redis | None = None
            self.node_port = None
            # Everything inside the try: whatever goes wrong, the listener reconnects rather
            # than ending (a worker that stops hearing changes would only learn of them from
            # its caches' TTL).
            try:
                urls = redis_client.node_urls(redis_url, self.redis)
                client = Redis.from_url(urls[attempt % len(urls)], socket_connect_timeout=1.0)
                attempt += 1
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await asyncio.wait_for(pubsub.subscribe(self.channel), 2.0)
                    self.node_port = int(client.connection_pool.connection_kwargs["port"])
                    if self.subscribed.is_set():  # a reconnect: we may have missed messages
                        self.apply(EVERYTHING)
                    self.subscribed.set()
                    delay = 0.2
                    await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff
                metrics.REDIS_ERRORS_INVALIDATION.inc()
                log.warning("invalidation_listener_reconnecting", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def _receive(self, pubsub: PubSub) -> None:
        """Apply what arrives; PING the node when it has been quiet, and give up on it when
        it has not answered for a while (a stopped node does not close the connection)."""
        heard = time.monotonic()
        pinged = heard
        while True:
            message = await pubsub.get_message(timeout=0.5)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self.apply(Change.decode(message["data"]))
                continue
            if now - heard > SILENT_NODE_SECONDS:
                raise TimeoutError("the subscribed node stopped answering")
            if now - pinged > PING_SECONDS:
                await pubsub.ping()
                pinged = now

    async def stop(self) -> None:
        """Bounded: closing a subscription to a Redis that went away can wait on a socket for
        good (seen once in a test run), and a worker must still exit."""
        if self._listener is not None:
            self._listener.cancel()
            done, _ = await asyncio.wait({self._listener}, timeout=STOP_SECONDS)
            if not done:
                log.warning("invalidation_listener_stop_timed_out")
        if self.redis is not None:
            try:
                await asyncio.wait_for(self.redis.aclose(), STOP_SECONDS)
            except Exception as exc:  # noqa: BLE001 - shutting down: nothing left to do about it
                log.warning("invalidation_close_failed", error=type(exc).__name__)


def publish_sync(redis_url: str, prefix: str, changes: list[Change]) -> None:
    """For the CLI, which has no event loop or caches of its own: tell the running workers."""
    redis_client.publish_sync(
        redis_url, channel_name(prefix), [change.encode() for change in changes]
    )
