"""Rate limits and quotas through the HTTP API, on Redis (PostgreSQL run) and in process
(SQLite run): same semantics in both."""

import time

import redis

from saas.keys import service as keys
from tests.support.apps import services
from tests.support.customers import TEST_ACTOR
from tests.support.nlp import FRENCH, MODEL

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}
RATE_HEADERS = {
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
}


def test_headers_on_success_client_error_and_rejection(client, make_customer):
    customer = make_customer(rate_limit="3/minute")
    ok = client.post(ENTITIES, headers=customer.headers, json=BODY)
    assert ok.status_code == 200
    assert ok.headers.keys() >= RATE_HEADERS
    assert ok.headers["x-ratelimit-limit"] == "3"
    assert ok.headers["x-ratelimit-remaining"] == "2"
    assert ok.headers["ratelimit-policy"] == '"minute";q=3;w=60'
    assert ok.headers["ratelimit"].startswith('"minute";r=2;t=')
    assert 0 < int(ok.headers["x-ratelimit-reset"]) - time.time() <= 61

    # A text the model policy refuses is answered before admission: the headers as they stand.
    empty = client.post(ENTITIES, headers=customer.headers, json={"text": ""})
    assert empty.status_code == 400 and empty.headers.keys() >= RATE_HEADERS
    assert empty.headers["x-ratelimit-remaining"] == "2"
    # A body the route refuses was admitted: it counts.
    bad = client.post(ENTITIES, headers=customer.headers, json={"txt": "Paris."})
    assert bad.status_code == 422 and bad.headers.keys() >= RATE_HEADERS
    assert bad.headers["x-ratelimit-remaining"] == "1"

    assert client.get("/v1/models", headers=customer.headers).status_code == 200
    rejected = client.post(ENTITIES, headers=customer.headers, json=BODY)
    assert rejected.status_code == 429
    assert rejected.headers.keys() >= RATE_HEADERS
    assert rejected.headers["x-ratelimit-remaining"] == "0"
    retry_after = int(rejected.headers["retry-after"])
    # The first request's bucket (a second wide) counts until it has wholly left the minute.
    assert 55 <= retry_after <= 61
    reset = int(rejected.headers["x-ratelimit-reset"])
    assert reset <= time.time() + retry_after + 1  # never told to retry before the reset
    assert "Rate limit exceeded" in rejected.json()["detail"]


def test_accounts_are_independent_and_keys_share_their_account(client, make_customer, db):
    first = make_customer(rate_limit="2/minute")
    second = make_customer(rate_limit="2/minute")
    with db() as session:
        _, other_key = keys.create_key(
            session=session, account_id=first.account_id, actor=TEST_ACTOR, name="second key"
        )
        session.commit()
    assert client.get("/v1/models", headers=first.headers).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": other_key}).status_code == 200
    assert client.get("/v1/models", headers=first.headers).status_code == 429
    assert client.get("/v1/models", headers={"X-API-Key": other_key}).status_code == 429
    assert client.get("/v1/models", headers=second.headers).status_code == 200
    assert client.get("/v1/models", headers=second.headers).status_code == 200


def test_quota_is_exact_and_failures_do_not_consume_it(client, make_customer):
    customer = make_customer(monthly_quota=3, models=[MODEL])
    failures = [
        client.post(ENTITIES, headers=customer.headers, json={"text": ""}),  # 400
        client.post(ENTITIES, headers=customer.headers, json={"text": 5}),  # 422
        client.post(f"/v1/{FRENCH}/entities", headers=customer.headers, json=BODY),  # 403
        client.post("/v1/xx/entities", headers=customer.headers, json=BODY),  # 404
    ]
    assert [r.status_code for r in failures] == [400, 422, 403, 404]
    # Non-billable routes do not touch the quota either.
    assert client.get("/v1/models", headers=customer.headers).status_code == 200
    successes = [client.post(ENTITIES, headers=customer.headers, json=BODY) for _ in range(3)]
    assert [r.status_code for r in successes] == [200, 200, 200]
    exhausted = client.post("/v1/extractions", headers=customer.headers, json={"sentence": "Hi"})
    assert exhausted.status_code == 402
    assert "quota" in exhausted.json()["detail"].lower()
    assert int(exhausted.headers["retry-after"]) >= 1
    assert exhausted.headers.keys() >= RATE_HEADERS
    # The quota stops billable requests only.
    assert client.get("/v1/models", headers=customer.headers).status_code == 200


def test_quota_of_zero_refuses_every_billable_request(client, make_customer):
    customer = make_customer(monthly_quota=0)
    assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 402
    assert client.get(f"/v1/{MODEL}/versions", headers=customer.headers).status_code == 200


def test_admin_routes_have_their_own_limit_not_the_plans(client, make_customer, settings):
    admin = make_customer(rate_limit="1/minute", scopes=("admin",))
    responses = [client.get("/admin/plans", headers=admin.headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].headers["ratelimit-policy"] == '"second";q=20;w=1, "minute";q=600;w=60'
    # ...and they do not use up the account's own window.
    assert client.get("/v1/models", headers=admin.headers).status_code == 200


def test_admin_limit_is_enforced(settings, make_customer):
    from tests.support.apps import dedicated_client

    admin = make_customer(scopes=("admin",))
    with dedicated_client(settings, admin_rate_limit="3/minute") as client:
        statuses = [client.get("/admin/plans", headers=admin.headers).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


def test_the_limiter_in_use_is_the_configured_one(client, customer, settings):
    """Redis when SAAS_REDIS_URL is set (its keys appear), this process's memory otherwise."""
    assert client.get("/v1/models", headers=customer.headers).status_code == 200
    admission = services(client).admission
    if settings.redis_url is None:
        assert admission.shared is None
        return
    assert admission.shared is not None
    store = redis.Redis.from_url(settings.redis_url)
    pattern = f"{settings.redis_prefix}:rl:{{acct_{customer.account_id}}}:*"
    assert store.keys(pattern), pattern
