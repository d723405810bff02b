"""One Redis or a Redis Cluster behind one set of rules: what the limiter does when no cluster
node answers, and node URLs for the invalidation listener."""

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from saas.app import connect_redis, redis_pool_size
from saas.config import Settings
from saas.kit import redis_client
from saas.ratelimit.admission import Admission, LimiterUnavailable
from tests.support.servers import free_port
from tests.support.stores import REDIS_PREFIX, redis_url

FAIL_OPEN = {"outcome": "fail_open"}


def test_node_urls_keep_ipv6_hosts_in_brackets():
    urls = redis_client.node_urls("redis+cluster://[::1]:7000,127.0.0.1:7001")
    assert urls == ["redis://[::1]:7000/0", "redis://127.0.0.1:7001/0"]


@pytest.mark.parametrize("fail_open", [True, False])
def test_no_cluster_node_answering_is_an_outage_not_a_crash(fail_open):
    """The cluster client's own errors (no node reachable) are not RedisErrors: the limiter
    must treat them like any Redis outage."""

    async def scenario() -> None:
        url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        client = redis_client.connect(url, timeout=0.5, max_connections=4)
        admission = Admission(fail_open=fail_open, redis_timeout=0.5)
        admission.use_redis(client, "test-no-cluster")
        try:
            await admission.warm_up()  # logged, not raised: workers start without Redis
            if fail_open:
                fallbacks = REGISTRY.get_sample_value("saas_admission_total", FAIL_OPEN) or 0
                decision = await admission.admit(1, "5/minute", quota=100)
                assert decision.admitted and not decision.shared
                assert REGISTRY.get_sample_value("saas_admission_total", FAIL_OPEN) == fallbacks + 1
            else:
                with pytest.raises(LimiterUnavailable):
                    await admission.admit(1, "5/minute", quota=100)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_prefix_with_braces_is_refused():
    """Its braces would become the keys' hash tag: every account on one cluster slot."""
    from pydantic import ValidationError

    from saas.config import Settings

    with pytest.raises(ValidationError, match="must not contain"):
        Settings(redis_prefix="saas{x}", _env_file=None)


@pytest.mark.parametrize("pool", [None, 16])
def test_the_pool_follows_the_workers_concurrency(pool):
    """64 requests in flight, each holding its Redis connection for 0.4 s (a BLPOP that times
    out, standing in for a slow Redis): with one connection per possible request (the default)
    all finish together; with a fixed pool of 16 the later ones queue for a connection and,
    past SAAS_REDIS_TIMEOUT, fail."""
    settings = Settings(
        redis_url=redis_url(),
        redis_timeout=1.0,
        max_connections=64,
        redis_max_connections=pool,
        _env_file=None,
    )
    assert redis_pool_size(settings) == (pool or 64)
    key = f"{REDIS_PREFIX}-pool-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[object]:
        client = connect_redis(settings)
        try:
            return await asyncio.gather(
                *(client.blpop([key], timeout=0.4) for _ in range(64)), return_exceptions=True
            )
        finally:
            await client.aclose()

    results = asyncio.run(scenario())
    failed = [r for r in results if isinstance(r, Exception)]
    if pool is None:
        assert failed == []
    else:  # waves of 16: the fourth waits 1.2 s for a connection
        assert failed and all(isinstance(r, redis_client.ERRORS) for r in failed)
