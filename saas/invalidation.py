"""Cache invalidation on every worker and host: a revoked key, a suspended account or a changed
plan takes effect everywhere within a second.

A service function that changes such a thing `announce`s it on its session; whoever owns the
session (the request's session dependency, the CLI) commits and then hands the announced changes
to `Invalidator.publish` (a server) or `publish_sync` (the CLI), never before the commit: a worker
that reloaded an uncommitted change would cache the old value again.

The worker that made the change applies it to its own caches at once and publishes it on a Redis
pub/sub channel; every worker listens and applies what it hears. If the subscription breaks,
messages may have been missed, so a worker that reconnects forgets everything. The caches' TTL
(SAAS_KEY_CACHE_TTL) stays the backstop. Without Redis there is one process: local is everything.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson
import redis
import structlog
from redis.asyncio import Redis
from sqlmodel import Session

log = structlog.get_logger(__name__)

ChangeKind = Literal["key", "account", "plan", "everything"]
_SESSION_KEY = "saas_announced_changes"


@dataclass(frozen=True, slots=True)
class Change:
    """What workers must forget: a key (by hash), an account or a plan (by id), or all."""

    kind: ChangeKind
    value: str | int = 0

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "value": self.value})

    @classmethod
    def decode(cls, data: bytes) -> "Change":
        fields = orjson.loads(data)
        return cls(kind=fields["kind"], value=fields["value"])


EVERYTHING = Change("everything")


def announce(session: Session, change: Change) -> None:
    """Queue `change` to be published once the session's transaction commits."""
    session.info.setdefault(_SESSION_KEY, []).append(change)


def announced(session: Session) -> list[Change]:
    """The queued changes, once (call after the commit)."""
    changes: list[Change] = session.info.pop(_SESSION_KEY, [])
    return list(dict.fromkeys(changes))


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
