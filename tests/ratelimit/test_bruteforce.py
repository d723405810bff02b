"""Failed authentication attempts are limited per client address."""

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import event

from saas.auth import key_format
from saas.keys import service as keys
from tests.support.apps import dedicated_client, services
from tests.support.customers import TEST_ACTOR
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem


@contextmanager
def key_lookups(client: TestClient) -> Iterator[list[str]]:
    """The key lookups (queries by key hash) the app's database answers meanwhile."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many):
        if "key_hash" in statement and "api_keys" in statement:
            seen.append(statement)

    engine = services(client).database
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_too_many_bad_keys_block_the_address_not_its_good_keys(settings, customer, make_customer):
    other = make_customer()  # a customer behind the same address who never called before
    with dedicated_client(settings, auth_failures_per_ip="5/minute") as client:
        # The customer has called from this address before the misconfigured client starts.
        assert client.get("/v1/models", headers=customer.headers).status_code == 200
        statuses = []
        for _ in range(6):
            bad = {"X-API-Key": key_format.generate_key()}
            statuses.append(client.get("/v1/models", headers=bad).status_code)
        assert statuses == [401] * 5 + [429]

        # A key this worker saw authenticate keeps working (its own plan limits it)...
        for _ in range(3):
            assert client.get("/v1/models", headers=customer.headers).status_code == 200
        # ...while a new bad key, and a key this worker has not seen, are refused without a
        # lookup: a blocked address costs the database nothing.
        with key_lookups(client) as lookups:
            bad = {"X-API-Key": key_format.generate_key()}
            refused = [client.get("/v1/models", headers=h) for h in (bad, other.headers)]
            malformed = client.get("/v1/models", headers={"X-API-Key": "not-a-key"})
        assert lookups == []
        for blocked in [*refused, malformed]:
            assert 1 <= int(blocked.headers["retry-after"]) <= 60
            body = assert_problem(blocked, "too_many_failed_keys")
            assert "failed authentication" in body["detail"]
        assert client.get("/healthz").status_code == 200  # public routes stay open


def test_a_vouched_key_is_checked_again_while_blocked(settings, make_customer, db):
    """Vouching only earns a lookup: a key revoked meanwhile is refused as usual."""
    customer = make_customer()
    with dedicated_client(settings, auth_failures_per_ip="3/minute") as client:
        assert client.get("/v1/models", headers=customer.headers).status_code == 200
        for _ in range(4):
            client.get("/v1/models", headers={"X-API-Key": key_format.generate_key()})
        with db() as session:
            keys.revoke_key(session=session, key_id=customer.key_id, actor=TEST_ACTOR)
            session.commit()
        services(client).authenticator.forget(key_format.hash_key(customer.key))
        refused = client.get("/v1/models", headers=customer.headers)
        assert refused.status_code in (401, 429)  # revoked, and counted as another failure
        assert client.get("/v1/models", headers=customer.headers).status_code == 429


def test_good_keys_are_never_counted(settings, customer):
    with dedicated_client(settings, auth_failures_per_ip="3/minute") as client:
        for _ in range(10):
            assert client.get(f"/v1/{MODEL}/versions", headers=customer.headers).status_code == 200
        # A missing key is not a guess either.
        assert [client.get("/v1/models").status_code for _ in range(5)] == [401] * 5
