"""Propagation across processes: two workers share Redis; a key is used in a loop on both. After
the admin call returns, every request sent more than a second later is refused on both workers.
Same for an account suspension and for a plan change (the new limit is enforced)."""

import threading
import time

import httpx
import pytest

from tests.support.apps import two_workers_on_redis
from tests.support.marks import POSTGRES_ONLY
from tests.support.polling import eventually


@pytest.fixture
def two_workers(backend, settings, request, redis_for):
    kind = getattr(request, "param", "single")
    with two_workers_on_redis(
        backend,
        settings,
        redis=redis_for(kind),
        SAAS_KEY_CACHE_TTL="60",  # so only the broadcast can explain a fast refusal
        SAAS_AUTH_FAILURES_PER_IP="100000/minute",  # the loop keeps presenting a dead key
    ) as base:
        yield base


# Answers before the change: over fresh connections, enough that both workers have served (and
# cached) the key, whichever way the kernel spreads the connections.
WARM = 40


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
            time.sleep(0.01)  # the load's pace

    def __enter__(self) -> "Hammer":
        for thread in self._threads:
            thread.start()
        # Warm: the key is cached on both workers (the connections are spread over them).
        assert eventually(lambda: len(self.results) >= WARM, 30), len(self.results)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def after(self, moment: float) -> list[int]:
        return [status for sent, status in self.results if sent > moment]


# (admin call for a customer, the status every later request must get). After a plan change to
# 5/minute the new window fills within moments; after that none may pass.
CHANGES = {
    "revoke key": (lambda c: ("DELETE", f"/admin/keys/{c.key_id}", None), 401),
    "suspend account": (
        lambda c: ("PATCH", f"/admin/accounts/{c.account_id}", {"status": "suspended"}),
        403,
    ),
    "change plan": (
        lambda c: ("PATCH", f"/admin/plans/{c.plan_name}", {"rate_limit": "5/minute"}),
        429,
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_change_reaches_both_workers_within_a_second(two_workers, make_customer, change):
    check_change(two_workers, make_customer, change)


@POSTGRES_ONLY
@pytest.mark.parametrize("two_workers", ["cluster"], indirect=True)
@pytest.mark.parametrize("change", ["revoke key", "change plan"])
def test_change_reaches_both_workers_on_a_redis_cluster(two_workers, make_customer, change):
    """Published through the cluster client, heard by workers subscribed to any node."""
    check_change(two_workers, make_customer, change)


def check_change(two_workers, make_customer, change):
    request_for, expected = CHANGES[change]
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    method, path, body = request_for(customer)
    with Hammer(two_workers, customer.headers) as hammer:
        assert set(hammer.after(0)) == {200}
        response = httpx.request(method, f"{two_workers}{path}", headers=admin.headers, json=body)
        assert response.status_code == 200
        done = time.monotonic()
        time.sleep(2.5)  # the point: a second and a half of requests after the second allowed
    late = hammer.after(done + 1.0)
    assert len(late) >= 20 and set(late) == {expected}, late
