"""Two hosts on one machine: two separate Gunicorn instances (their own ports, 2 workers each, as
two API hosts would run) sharing the Redis Cluster and PostgreSQL. Limits hold exactly across
them, a key revoked through one is refused by both within a second, and what is billed is what
was answered."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.test_gunicorn import Gunicorn
from tests.support.marks import POSTGRES_ONLY
from tests.support.nlp import MODEL
from tests.support.polling import eventually
from tests.support.usage import billed

N = 30


@pytest.fixture
def two_hosts(backend, settings, redis_cluster) -> Iterator[list[Gunicorn]]:
    hosts = [Gunicorn(backend, settings.redis_prefix, workers=2) for _ in range(2)]
    try:
        for host in hosts:
            host.env["SAAS_REDIS_URL"] = redis_cluster.url
            host.env["SAAS_LOG_LEVEL"] = "WARNING"
            host.start()
        yield hosts
    finally:
        for host in hosts:
            host.stop()


@POSTGRES_ONLY
def test_limits_revocation_and_billing_hold_across_two_hosts(two_hosts, make_customer, db):
    customer = make_customer(rate_limit=f"{N}/minute")
    bases = [host.base for host in two_hosts]

    def call(number: int) -> int:
        # Alternating hosts, a new connection each, so every worker of both takes some.
        response = httpx.post(
            f"{bases[number % 2]}/v1/{MODEL}/entities",
            headers={**customer.headers, "Connection": "close"},
            json={"text": "Ada Lovelace lived in London."},
            timeout=30,
        )
        return response.status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(call, range(3 * N)))
    assert statuses.count(200) == N, statuses
    assert statuses.count(429) == 2 * N, statuses
    assert billed(db, customer.account_id) == N

    # Revoked through one host: both refuse it within a second (key caches trust a key for 10 s,
    # so only the invalidation over the cluster's pub/sub can make it that fast).
    other = make_customer()
    for base in bases:  # cached by every worker that answers
        for _ in range(4):
            assert httpx.get(f"{base}/v1/models", headers=other.headers).status_code == 200
    operator = make_customer(scopes=("admin",))
    revoked = httpx.delete(f"{bases[0]}/admin/keys/{other.key_id}", headers=operator.headers)
    assert revoked.status_code == 200
    started = time.monotonic()

    def refused_everywhere() -> bool:
        # Several new connections per host: each may reach either of its workers.
        return all(
            httpx.get(
                f"{base}/v1/models", headers={**other.headers, "Connection": "close"}
            ).status_code
            == 401
            for base in bases
            for _ in range(4)
        )

    assert eventually(refused_everywhere, timeout=5)
    assert time.monotonic() - started < 1.0
