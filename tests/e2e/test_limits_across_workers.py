"""Exactness across processes: two server workers share one Redis; an account allowed N requests
a minute gets exactly N of 3N concurrent requests admitted, the rest 429 with Retry-After."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.apps import two_workers_on_redis
from tests.support.marks import ON_REDIS_AND_CLUSTER

N = 20


@pytest.fixture
def two_workers(backend, settings, redis_for, redis_kind):
    with two_workers_on_redis(backend, settings, redis=redis_for(redis_kind)) as base:
        yield base


@ON_REDIS_AND_CLUSTER
def test_exactly_n_of_3n_concurrent_requests_are_admitted(two_workers, make_customer):
    customer = make_customer(rate_limit=f"{N}/minute")

    def call(_: int) -> httpx.Response:
        # A new connection per request, so the kernel spreads them over both workers.
        return httpx.get(f"{two_workers}/v1/models", headers=customer.headers, timeout=30)

    with ThreadPoolExecutor(3 * N) as pool:
        responses = list(pool.map(call, range(3 * N)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == N, statuses
    assert statuses.count(429) == 2 * N, statuses
    for response in responses:
        if response.status_code == 429:
            # A minute, plus at most one bucket (1/60 of it) counted in full.
            assert 1 <= int(response.headers["retry-after"]) <= 61
            assert response.headers["x-ratelimit-remaining"] == "0"
