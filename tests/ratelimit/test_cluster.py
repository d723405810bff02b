"""The limiter, quotas, the failed-key guard, readiness and invalidation on a Redis Cluster
(SAAS_REDIS_URL=redis+cluster://...), and what a master's failure does: fail open or closed
while its slots have no master, admission back on the cluster once its replica is promoted."""

import asyncio
import threading
import time

import pytest
import redis

from saas.auth import key_format
from saas.kit.changes import Change
from saas.kit.invalidation import Invalidator, publish_sync
from saas.ratelimit.windows import BUCKETS
from tests.support.apps import dedicated_client
from tests.support.marks import POSTGRES_ONLY
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.polling import eventually, eventually_async

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


def window_key(settings, account_id: int, seconds: int = 60) -> str:
    return f"{settings.redis_prefix}:rl:{{acct_{account_id}}}:{seconds}:b{BUCKETS}"


@pytest.fixture(scope="module")
def cluster_client(settings, redis_cluster):
    with dedicated_client(
        settings, redis_url=redis_cluster.url, auth_failures_per_ip="5/minute"
    ) as client:
        yield client


@POSTGRES_ONLY
def test_limits_and_quota_are_kept_on_the_cluster(
    cluster_client, redis_cluster, settings, make_customer
):
    customer = make_customer(rate_limit="3/minute", monthly_quota=5)
    fail_open = metric(cluster_client, "saas_admission_total", outcome="fail_open")
    statuses = [
        cluster_client.post(ENTITIES, headers=customer.headers, json=BODY).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    assert metric(cluster_client, "saas_admission_total", outcome="fail_open") == fail_open
    # The window lives on the master of its account's slot, with the quota (same hash tag);
    # only its existence is checked: its layout is admit.lua's business.
    master = redis_cluster.master_of(window_key(settings, customer.account_id))
    with redis.Redis(port=master.port) as node:
        assert node.exists(window_key(settings, customer.account_id))
        assert node.exists(f"{settings.redis_prefix}:q:{{acct_{customer.account_id}}}")

    quota = make_customer(monthly_quota=3)
    answers = [cluster_client.post(ENTITIES, headers=quota.headers, json=BODY) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 402]
    # A batch of two does not fit in what is left of a quota of 4 after 3.
    batch = make_customer(monthly_quota=4)
    for _ in range(3):
        assert cluster_client.post(ENTITIES, headers=batch.headers, json=BODY).status_code == 200
    texts = {"texts": ["Paris.", "Rome."]}
    batch_url = f"{ENTITIES}/batch"
    assert cluster_client.post(batch_url, headers=batch.headers, json=texts).status_code == 402
    assert cluster_client.post(ENTITIES, headers=batch.headers, json=BODY).status_code == 200


@POSTGRES_ONLY
def test_failed_key_guard_and_readiness_on_the_cluster(cluster_client, customer):
    ready = cluster_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    ip = {"X-Forwarded-For": "198.51.100.7"}  # an address of its own for the guard's count
    # Counters are per process: other tests' outages may have counted before this one.
    errors = metric(cluster_client, "saas_redis_errors_total", component="auth_guard")
    statuses = [
        cluster_client.get(
            "/v1/models", headers={**ip, "X-API-Key": key_format.generate_key()}
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    assert metric(cluster_client, "saas_redis_errors_total", component="auth_guard") == errors


class Load:
    """A thread sending requests for one customer until stopped: (monotonic time, status,
    seconds taken, Retry-After) per request."""

    def __init__(self, client, headers) -> None:
        self.client, self.headers = client, headers
        self.results: list[tuple[float, int, float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            response = self.client.post(ENTITIES, headers=self.headers, json=BODY)
            took = time.monotonic() - sent
            self.results.append(
                (sent, response.status_code, took, response.headers.get("retry-after"))
            )
            time.sleep(0.02)  # the load's pace

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def on_master_of(cluster, settings, make_customer, master, **plan):
    """A new customer whose account's slot is served by `master`."""
    for _ in range(60):
        customer = make_customer(**plan)
        if cluster.master_of(window_key(settings, customer.account_id)).port == master.port:
            return customer
    raise AssertionError("no account landed on that master")


@POSTGRES_ONLY
@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_a_master_fails_under_load_and_its_replica_takes_over(
    own_cluster, settings, make_customer, fail_open
):
    busy = make_customer(rate_limit="1000/minute")
    master = own_cluster.master_of(window_key(settings, busy.account_id))
    limited = on_master_of(own_cluster, settings, make_customer, master, rate_limit="2/minute")
    with dedicated_client(
        settings, redis_url=own_cluster.url, limiter_fail_open=fail_open
    ) as client:

        def fallbacks() -> float:  # admitted by this worker's own limiter
            return metric(client, "saas_admission_total", outcome="fail_open")

        before = fallbacks()
        assert client.post(ENTITIES, headers=limited.headers, json=BODY).status_code == 200
        with Load(client, busy.headers) as load:
            assert eventually(lambda: len(load.results) >= 10, timeout=10)
            killed_at = time.monotonic()
            own_cluster.kill(master)
            own_cluster.wait_until_ok(timeout=30)  # the replica is promoted
            promoted_at = time.monotonic()
            # Back on the cluster: an admission that is not a fallback.
            assert eventually(
                lambda: any(s == 200 and t > promoted_at + 1.5 for t, s, _, _ in load.results),
                timeout=10,
            )
        during = [(s, took, ra) for t, s, took, ra in load.results if t > killed_at]
        assert during, "no request was sent while the master was down"
        assert all(took < 2.5 for _, took, _ in during), during  # nothing hangs
        if fail_open:
            assert {s for s, _, _ in during} == {200}, during
            assert fallbacks() > before
        else:
            assert {s for s, _, _ in during} <= {200, 503}, during
            assert all(ra == "1" for s, _, ra in during if s == 503)
            assert any(s == 503 for s, _, _ in during)
            assert fallbacks() == before
        # Admission runs on the promoted master again: no fallback, the count is shared.
        after = fallbacks()
        assert client.post(ENTITIES, headers=busy.headers, json=BODY).status_code == 200
        assert fallbacks() == after
        new_master = own_cluster.master_of(window_key(settings, busy.account_id))
        assert new_master.port != master.port
        with redis.Redis(port=new_master.port) as node:
            assert node.exists(window_key(settings, busy.account_id))
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        # Per worker while the master was down (fail open): the limited account's window was
        # kept by this worker alone, and on the cluster again afterwards.
        if fail_open:
            assert client.post(ENTITIES, headers=limited.headers, json=BODY).status_code in {
                200,
                429,
            }


@POSTGRES_ONLY
def test_invalidation_survives_the_failure_of_its_node(own_cluster, settings):
    heard: list[Change] = []
    prefix = f"{settings.redis_prefix}-inv"

    async def scenario() -> None:
        invalidator = Invalidator(heard.append)
        invalidator.start(own_cluster.url, prefix)
        try:
            await asyncio.wait_for(invalidator.subscribed.wait(), 10)
            await asyncio.to_thread(publish_sync, own_cluster.url, prefix, [Change("key", "a")])
            assert await eventually_async(lambda: Change("key", "a") in heard, timeout=15)
            node = next(n for n in own_cluster.nodes if n.port == invalidator.node_port)
            own_cluster.kill(node)
            await asyncio.to_thread(own_cluster.wait_until_ok, 30)
            # Resubscribed through another node: it forgets everything (it may have missed
            # messages), then hears what is published again.
            assert await eventually_async(
                lambda: invalidator.node_port not in {None, node.port}, timeout=15
            )
            assert await eventually_async(
                lambda: any(c.kind == "everything" for c in heard), timeout=15
            )
            await asyncio.to_thread(publish_sync, own_cluster.url, prefix, [Change("key", "b")])
            assert await eventually_async(lambda: Change("key", "b") in heard, timeout=15)
        finally:
            await invalidator.stop()

    asyncio.run(scenario())
