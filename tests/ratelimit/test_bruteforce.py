"""Failed authentication attempts are limited per client address."""

from saas import security
from tests.conftest import MODEL, dedicated_client


def test_too_many_bad_keys_block_the_address(settings, customer):  # type: ignore[no-untyped-def]
    with dedicated_client(settings, auth_failures_per_ip="5/minute") as client:
        statuses = []
        for _ in range(6):
            bad = {"X-API-Key": security.generate_key()}
            statuses.append(client.get("/v1/models", headers=bad).status_code)
        assert statuses == [401] * 5 + [429]
        blocked = client.get("/v1/models", headers=customer.headers)  # even a good key
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert "failed authentication" in blocked.json()["detail"]
        assert client.get("/healthz").status_code == 200  # public routes stay open


def test_good_keys_are_never_counted(settings, customer):  # type: ignore[no-untyped-def]
    with dedicated_client(settings, auth_failures_per_ip="3/minute") as client:
        for _ in range(10):
            assert client.get(f"/v1/{MODEL}/versions", headers=customer.headers).status_code == 200
        # A missing key is not a guess either.
        assert [client.get("/v1/models").status_code for _ in range(5)] == [401] * 5
