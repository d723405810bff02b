"""API-key authentication: header forms, every rejection reason, scopes, the local cache."""

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event

from saas.auth import key_format
from saas.keys import service as keys
from saas.keys.authenticator import KeyAuthenticator
from saas.keys.models import ApiKey
from saas.kit.db import make_engine, utcnow
from tests.support.apps import services
from tests.support.customers import TEST_ACTOR
from tests.support.nlp import MODEL
from tests.support.polling import eventually
from tests.support.problems import assert_problem

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


@pytest.mark.parametrize(
    "header",
    [
        lambda k: {"Authorization": f"Token {k}"},
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"authorization": f"bearer   {k}"},
        lambda k: {"X-API-Key": k},
    ],
    ids=["token", "bearer", "bearer-lowercase", "x-api-key"],
)
def test_each_header_form_is_accepted(client, customer, header):
    response = client.post(ENTITIES, headers=header(customer.key), json=BODY)
    assert response.status_code == 200
    assert response.headers["x-request-id"]


def _assert_401(response, code, detail_fragment):
    body = assert_problem(response, code)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert detail_fragment in body["detail"]


def test_missing_key(client):
    _assert_401(client.post(ENTITIES, json=BODY), "missing_api_key", "Missing API key")
    _assert_401(
        client.post(ENTITIES, headers={"Authorization": "Basic abc"}, json=BODY),
        "missing_api_key",
        "Missing",
    )


def test_malformed_key_is_rejected_without_a_database_query(client, settings):
    key = key_format.generate_key()
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    with count_key_queries(client) as queries:
        _assert_401(
            client.post(ENTITIES, headers={"X-API-Key": typo}, json=BODY),
            "malformed_api_key",
            "Malformed",
        )
        _assert_401(
            client.post(ENTITIES, headers={"X-API-Key": "hello"}, json=BODY),
            "malformed_api_key",
            "Malformed",
        )
    # Only lookups count: the batched last_used_at UPDATE of earlier requests may land meanwhile.
    assert [q for q in queries if q.lstrip().upper().startswith("SELECT")] == []


def test_unknown_key(client):
    unknown = key_format.generate_key()
    _assert_401(
        client.post(ENTITIES, headers={"X-API-Key": unknown}, json=BODY),
        "invalid_api_key",
        "Invalid API key",
    )


def test_revoked_key(client, customer, db):
    with db() as session:
        keys.revoke_key(session=session, key_id=customer.key_id, actor=TEST_ACTOR)
        session.commit()
    _assert_401(
        client.post(ENTITIES, headers=customer.headers, json=BODY), "key_revoked", "revoked"
    )


def test_a_cached_key_is_looked_up_again_after_the_ttl(customer, db, settings):
    """The TTL is the backstop when no invalidation arrives: a change made behind the cache's
    back (here straight in the database) shows once the entry ages out, not before."""
    now = [1000.0]
    engine = make_engine(settings.database_url)
    authenticator = KeyAuthenticator(
        engine, ttl=10, max_size=100, flush_seconds=60, clock=lambda: now[0]
    )

    async def revoked() -> bool:
        principal = await authenticator.lookup(customer.key)
        assert principal is not None
        return principal.revoked

    async def lookups() -> list[bool]:
        seen = [await revoked()]
        with db() as session:
            keys.revoke_key(session=session, key_id=customer.key_id, actor=TEST_ACTOR)
            session.commit()
        now[0] += 9.9
        seen.append(await revoked())  # still the cached entry
        now[0] += 0.2
        seen.append(await revoked())  # aged out: looked up again
        return seen

    try:
        assert asyncio.run(lookups()) == [False, False, True]
    finally:
        engine.dispose()


def test_expired_key(client, make_customer):
    expired = make_customer(expires_at=utcnow() - timedelta(seconds=1))
    _assert_401(client.post(ENTITIES, headers=expired.headers, json=BODY), "key_expired", "expired")


def test_key_expires_while_cached(client, make_customer):
    expires_at = utcnow() + timedelta(seconds=0.5)
    soon = make_customer(expires_at=expires_at)
    assert client.post(ENTITIES, headers=soon.headers, json=BODY).status_code == 200  # cached

    def refused() -> httpx.Response | None:
        response = client.post(ENTITIES, headers=soon.headers, json=BODY)
        return response if response.status_code != 200 else None

    response = eventually(refused)
    assert response is not None and utcnow() >= expires_at  # refused at expiry, not before
    _assert_401(response, "key_expired", "expired")


def test_suspended_account(client, make_customer):
    suspended = make_customer(status="suspended")
    response = client.post(ENTITIES, headers=suspended.headers, json=BODY)
    assert_problem(response, "account_suspended", "Account is suspended.")


def test_admin_routes_need_the_admin_scope(client, customer, make_customer):
    response = client.get("/admin/plans", headers=customer.headers)
    assert "admin" in assert_problem(response, "admin_scope_required")["detail"]
    _assert_401(client.get("/admin/accounts"), "missing_api_key", "Missing")
    admin = make_customer(scopes=("admin",))
    plans = client.get("/admin/plans", headers=admin.headers)
    assert plans.status_code == 200
    assert customer.plan_name in [p["name"] for p in plans.json()]
    accounts = client.get(f"/admin/accounts?q={customer.account_name}", headers=admin.headers)
    assert customer.account_name in [a["name"] for a in accounts.json()["accounts"]]


def test_public_routes_need_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert client.get("/openapi.json").status_code == 200


class count_key_queries:  # noqa: N801 - used like a function in `with`
    """Collects the SQL statements that touch api_keys on the app's own engine."""

    def __init__(self, client):
        self.engine = services(client).database
        self.statements: list[str] = []

    def _record(self, conn, cursor, statement, *args):
        if "api_keys" in statement:
            self.statements.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.statements

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def test_cached_key_and_cached_miss_do_no_database_work(client, customer):
    unknown = key_format.generate_key()
    with count_key_queries(client) as queries:
        for _ in range(20):
            assert client.get("/v1/models", headers=customer.headers).status_code == 200
            assert client.get("/v1/models", headers={"X-API-Key": unknown}).status_code == 401
    selects = [q for q in queries if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 2  # one lookup per key, then the cache answers


def test_last_used_at_is_written_in_batches(client, customer, db, settings):
    before = utcnow()
    for _ in range(5):
        assert client.get("/v1/models", headers=customer.headers).status_code == 200

    def last_used_at():
        with db() as session:
            return session.get(ApiKey, customer.key_id).last_used_at

    last_used = eventually(last_used_at, interval=settings.last_used_flush_seconds)
    assert last_used is not None
    if last_used.tzinfo is None:
        last_used = last_used.replace(tzinfo=before.tzinfo)
    assert last_used >= before - timedelta(seconds=1)
