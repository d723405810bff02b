"""Redis clients for one node (`redis://`) or a Redis Cluster (`redis+cluster://h:p[,h:p...]`, the
`limits` library's notation), with the same rules for both: few connections, short timeouts, and
never a retry after a timeout (a script that timed out may have run; running it twice counts
twice).

On a cluster every command goes to the master of its key's slot (the limiter's keys of one call
share the `{acct_N}` hash tag, so one slot); a node that fails makes its commands fail until the
cluster has promoted its replica and the client has re-read the slot map, which it does on the
next command after a connection error.
"""

import asyncio
from urllib.parse import unquote, urlsplit

import redis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

# Everything a Redis or Redis Cluster call can raise when the server side is unreachable or
# failing over: the cluster client's own errors (no node reachable, a slot without a master) are
# not RedisErrors.
ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
Client = Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The `host:port` pairs of a `redis+cluster://[user:password@]h:p,h:p` URL."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for location in filter(None, hosts.split(",")):
        host, _, port = location.rpartition(":")
        nodes.append((host.strip("[]") or "127.0.0.1", int(port or 6379)))
    if not nodes:
        raise ValueError(f"no host:port in the Redis Cluster URL {url!r}")
    return nodes


def _credentials(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    found = {}
    if parts.username:
        found["username"] = unquote(parts.username)
    if parts.password:
        found["password"] = unquote(parts.password)
    return found


class BoundedCluster(RedisCluster):
    """redis-py's asyncio cluster client, bounded and without retries after a timeout.

    Its per-node pools do not wait for a free connection (a full one raises at once), so the
    commands in flight are bounded here instead, by a semaphore waited on within the caller's
    timeout, like a BlockingConnectionPool. After a broken connection or a cluster in failover
    the command is retried once, on the freshly read slot map; never after a timeout."""

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    def __init__(self, *args: object, max_in_flight: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def execute_command(self, *args: object, **kwargs: object) -> object:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)  # type: ignore[arg-type]


def connect(url: str, *, timeout: float, max_connections: int) -> Client:
    """A client for `url`, one node or a cluster. Short timeouts and no retries: a slow Redis
    must not hold requests (the limiter decides what happens instead)."""
    if is_cluster(url):
        return BoundedCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
            max_in_flight=max_connections,
            max_connections=max_connections,  # per node
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            ssl=urlsplit(url).scheme.startswith("rediss"),
            **_credentials(url),
        )
    # A bounded pool that waits for a free connection: a burst of requests reuses a few
    # connections instead of opening one each (a connection storm is what made calls slow).
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One immediate retry on a broken connection (a Redis restart leaves the pooled sockets
        # dead), never on a timeout: the script may have run, and running it twice counts twice.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


async def ping(client: Client) -> None:
    """Every node that holds data answers: on a cluster, each master (after a failover, the
    promoted replica: a connection error makes the client re-read the slot map)."""
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


def node_urls(url: str, client: Client | None = None) -> list[str]:
    """Single-node `redis://` URLs to reach the deployment through: the URL itself for one
    Redis; for a cluster, the nodes the client knows (else those in the URL). A classic PUBLISH
    on any cluster node reaches the subscribers of every node, so a subscriber needs one."""
    if not is_cluster(url):
        return [url]
    parts = urlsplit(url)
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    auth = parts.netloc.rpartition("@")[0]
    auth = f"{auth}@" if auth else ""
    nodes = cluster_nodes(url)
    if isinstance(client, RedisCluster) and client.get_nodes():
        known = [(node.host, int(node.port)) for node in client.get_nodes()]
        nodes = known + [node for node in nodes if node not in known]
    return [f"{scheme}://{auth}{_host(host)}:{port}/0" for host, port in nodes]


def _host(host: str) -> str:
    """An IPv6 address in brackets, as URLs want it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def publish_sync(url: str, channel: str, messages: list[bytes | str]) -> None:
    """Publish from a program without an event loop (the CLI)."""
    client: redis.Redis | redis.RedisCluster
    if is_cluster(url):
        client = redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cluster_nodes(url)],  # type: ignore[no-untyped-call]
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            ssl=urlsplit(url).scheme.startswith("rediss"),
            **_credentials(url),  # type: ignore[arg-type]
        )
    else:
        client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        for message in messages:
            client.publish(channel, message)
    finally:
        client.close()
