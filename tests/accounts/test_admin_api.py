"""Admin API: plans, accounts, key lifecycle, audit; customers manage only their own keys."""

import uuid
from datetime import datetime, timedelta

from sqlmodel import select

from saas.accounts.models import Plan
from saas.accounts.service import plans_breaking_rules
from saas.auth import key_format
from saas.kit.db import utcnow
from tests.support.nlp import MODEL

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


def test_plans_and_accounts_with_audit(client, make_customer):
    admin = make_customer(scopes=("admin",))
    h = admin.headers
    name = f"gold-{uuid.uuid4().hex[:6]}"
    plan = client.post("/admin/plans", headers=h, json={"name": name, "rate_limit": "10/second"})
    assert plan.status_code == 201 and plan.json()["rate_limit"] == "10/second"
    assert client.post("/admin/plans", headers=h, json={"name": name}).status_code == 409
    bad = client.patch(f"/admin/plans/{name}", headers=h, json={"rate_limit": "lots"})
    assert bad.status_code == 422
    updated = client.patch(f"/admin/plans/{name}", headers=h, json={"monthly_quota": 50})
    assert updated.json()["monthly_quota"] == 50
    assert client.get(f"/admin/plans/{name}", headers=h).json()["monthly_quota"] == 50

    acct = client.post(
        "/admin/accounts", headers=h, json={"name": f"{name}-co", "email": "a@b.co", "plan": name}
    )
    assert acct.status_code == 201
    account_id = acct.json()["id"]
    assert (
        client.post(
            "/admin/accounts", headers=h, json={"name": "x", "email": "not-an-email", "plan": name}
        ).status_code
        == 422
    )
    page = client.get(f"/admin/accounts?q={name}&limit=1", headers=h).json()
    assert page["total"] == 1 and page["accounts"][0]["id"] == account_id
    assert client.get(f"/admin/accounts/{account_id}", headers=h).json()["plan"] == name
    assert client.get("/admin/accounts/999999", headers=h).status_code == 404
    # A missing plan is 404 wherever it is named, in a path or in a body.
    no_plan = {"name": f"{name}-x", "email": "a@b.co", "plan": "no-such-plan"}
    assert client.post("/admin/accounts", headers=h, json=no_plan).status_code == 404
    assert (
        client.patch(f"/admin/accounts/{account_id}", headers=h, json={"plan": "no-such-plan"})
    ).status_code == 404
    # Nothing to change: nothing recorded. A field may be left out, never set to null.
    assert client.patch(f"/admin/plans/{name}", headers=h, json={}).status_code == 200
    same = client.patch(f"/admin/plans/{name}", headers=h, json={"monthly_quota": 50})
    assert same.status_code == 200
    assert client.patch(f"/admin/accounts/{account_id}", headers=h, json={}).status_code == 200
    active = client.patch(f"/admin/accounts/{account_id}", headers=h, json={"status": "active"})
    assert active.status_code == 200
    null_email = client.patch(f"/admin/accounts/{account_id}", headers=h, json={"email": None})
    assert null_email.status_code == 422 and "null" in null_email.json()["detail"]

    audit = client.get(f"/admin/audit?actor_key_id={admin.key_id}", headers=h).json()
    assert [e["action"] for e in audit] == ["account.create", "plan.update", "plan.create"]
    assert audit[1]["changes"] == {
        "before": {"monthly_quota": None},
        "after": {"monthly_quota": 50},
    }
    assert all(e["actor_account_id"] == admin.account_id for e in audit)


def test_suspend_resume_and_plan_change_apply_at_once(client, make_customer):
    admin = make_customer(scopes=("admin",))
    customer = make_customer()
    assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
    suspended = client.patch(
        f"/admin/accounts/{customer.account_id}",
        headers=admin.headers,
        json={"status": "suspended"},
    )
    assert suspended.json()["status"] == "suspended"
    assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 403
    client.patch(
        f"/admin/accounts/{customer.account_id}", headers=admin.headers, json={"status": "active"}
    )
    assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
    client.patch(
        f"/admin/plans/{customer.plan_name}", headers=admin.headers, json={"rate_limit": "1/minute"}
    )
    statuses = [
        client.post(ENTITIES, headers=customer.headers, json=BODY).status_code for _ in range(2)
    ]
    assert statuses == [200, 429]


def test_key_lifecycle(client, make_customer):
    admin = make_customer(scopes=("admin",))
    customer = make_customer()
    created = client.post(
        f"/admin/accounts/{customer.account_id}/keys", headers=admin.headers, json={"name": "ci"}
    )
    assert created.status_code == 201
    new = created.json()
    assert key_format.is_well_formed(new["key"]) and new["status"] == "active"
    listed = client.get(f"/admin/accounts/{customer.account_id}/keys", headers=admin.headers)
    assert new["key"] not in listed.text and key_format.hash_key(new["key"]) not in listed.text
    assert {k["id"] for k in listed.json()} == {customer.key_id, new["id"]}

    headers = {"X-API-Key": new["key"]}
    assert client.get("/v1/models", headers=headers).status_code == 200  # now cached
    revoked = client.delete(f"/admin/keys/{new['id']}", headers=admin.headers)
    assert revoked.json()["status"] == "revoked"
    assert client.get("/v1/models", headers=headers).status_code == 401  # no waiting for the TTL

    rolled = client.post(
        f"/admin/keys/{customer.key_id}/roll", headers=admin.headers, json={"grace_seconds": 600}
    )
    assert rolled.status_code == 201
    successor = rolled.json()
    assert client.get("/v1/models", headers={"X-API-Key": successor["key"]}).status_code == 200
    assert client.get("/v1/models", headers=customer.headers).status_code == 200  # grace
    listed = client.get(f"/admin/accounts/{customer.account_id}/keys", headers=admin.headers)
    old = next(k for k in listed.json() if k["id"] == customer.key_id)
    assert old["status"] == "grace" and old["rolled_at"] is not None
    # Rolled once is enough: a successor would inherit the grace deadline as its expiry.
    again = client.post(f"/admin/keys/{customer.key_id}/roll", headers=admin.headers, json={})
    assert again.status_code == 409 and "successor" in again.json()["detail"]
    # Without a grace period the rolled key stops at once, although every worker had it cached.
    headers = {"X-API-Key": successor["key"]}
    assert (
        client.post(
            f"/admin/keys/{successor['id']}/roll", headers=admin.headers, json={"grace_seconds": 0}
        ).status_code
        == 201
    )
    stopped = client.get("/v1/models", headers=headers)
    assert stopped.status_code == 401 and "expired" in stopped.json()["detail"]
    # A revoked or expired key is not rolled: that would bring it back.
    for key_id in (new["id"], successor["id"]):
        refused = client.post(f"/admin/keys/{key_id}/roll", headers=admin.headers, json={})
        assert refused.status_code == 409
    assert client.post("/admin/keys/999999/roll", headers=admin.headers, json={}).status_code == 404
    actions = [
        e["action"]
        for e in client.get(
            f"/admin/audit?actor_key_id={admin.key_id}", headers=admin.headers
        ).json()
    ]
    assert actions == ["key.roll", "key.roll", "key.revoke", "key.create"]


def test_customers_manage_only_their_own_keys(client, make_customer):
    alice = make_customer(max_keys=2)
    bob = make_customer()
    mine = client.get("/v1/keys", headers=alice.headers).json()
    assert [k["id"] for k in mine] == [alice.key_id]
    # A customer cannot grant itself a scope: the field is not part of the customer request.
    extra = client.post(
        "/v1/keys", headers=alice.headers, json={"name": "second", "scopes": ["admin"]}
    )
    assert extra.status_code == 201 and key_format.is_well_formed(extra.json()["key"])
    assert extra.json()["scopes"] == []
    over = client.post("/v1/keys", headers=alice.headers, json={"name": "third"})
    assert over.status_code == 403 and "2 active keys" in over.json()["detail"]

    # Bob's key, by id, through every route: never visible, never touched.
    assert client.delete(f"/v1/keys/{bob.key_id}", headers=alice.headers).status_code == 404
    assert bob.key_id not in [k["id"] for k in client.get("/v1/keys", headers=alice.headers).json()]
    assert client.get("/v1/models", headers=bob.headers).status_code == 200
    for path in [
        f"/admin/accounts/{bob.account_id}/keys",
        f"/admin/keys/{bob.key_id}/roll",
        f"/admin/accounts/{bob.account_id}",
        "/admin/usage",
        "/admin/audit",
    ]:
        assert client.get(path, headers=alice.headers).status_code == 403, path
    assert client.delete(f"/admin/keys/{bob.key_id}", headers=alice.headers).status_code == 403
    usage = client.get("/v1/usage", headers=alice.headers).json()
    assert usage["account"] == alice.account_name

    revoked = client.delete(f"/v1/keys/{extra.json()['id']}", headers=alice.headers)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"


def test_a_key_cannot_outlive_or_escape_its_own_containment(client, make_customer):
    """Rolling a key or giving it an expiry contains it: the key may not mint a key that
    outlives it, and once rolled it may not mint or revoke keys at all."""
    admin = make_customer(scopes=("admin",))
    expires_at = utcnow() + timedelta(days=2)
    temporary = make_customer(expires_at=expires_at, max_keys=5)
    later = (utcnow() + timedelta(days=30)).isoformat()
    minted = client.post("/v1/keys", headers=temporary.headers, json={"expires_at": later})
    assert minted.status_code == 201
    assert datetime.fromisoformat(minted.json()["expires_at"]) == expires_at
    unbounded = client.post("/v1/keys", headers=temporary.headers, json={})
    assert datetime.fromisoformat(unbounded.json()["expires_at"]) == expires_at

    leaked = make_customer(max_keys=5)
    rolled = client.post(f"/admin/keys/{leaked.key_id}/roll", headers=admin.headers, json={})
    assert rolled.status_code == 201
    refused = client.post("/v1/keys", headers=leaked.headers, json={})
    assert refused.status_code == 403 and "successor" in refused.json()["detail"]
    successor = rolled.json()["id"]
    assert client.delete(f"/v1/keys/{successor}", headers=leaked.headers).status_code == 403
    assert client.get("/v1/models", headers={"X-API-Key": rolled.json()["key"]}).status_code == 200


def test_plan_max_batch_texts_through_the_admin_api(client, make_customer):
    admin = make_customer(scopes=("admin",))
    h = admin.headers
    name = f"batchy-{uuid.uuid4().hex[:6]}"
    created = client.post(
        "/admin/plans", headers=h, json={"name": name, "rate_limit": "100/minute"}
    )
    assert created.status_code == 201 and created.json()["max_batch_texts"] == 32
    zero = client.post("/admin/plans", headers=h, json={"name": f"{name}-0", "max_batch_texts": 0})
    assert zero.status_code == 422

    customer = make_customer(max_batch_texts=5)
    batch_url = f"/v1/{MODEL}/entities/batch"
    three = {"texts": ["Paris.", "Rome.", "Oslo."]}
    assert client.post(batch_url, headers=customer.headers, json=three).status_code == 200
    patched = client.patch(
        f"/admin/plans/{customer.plan_name}", headers=h, json={"max_batch_texts": 2}
    )
    assert patched.status_code == 200 and patched.json()["max_batch_texts"] == 2
    bad = client.patch(f"/admin/plans/{customer.plan_name}", headers=h, json={"max_batch_texts": 0})
    assert bad.status_code == 422
    # Applied at once (the cached principal is invalidated).
    refused = client.post(batch_url, headers=customer.headers, json=three)
    assert refused.status_code == 413 and "at most 2" in refused.json()["detail"]
    assert (
        client.get(f"/admin/plans/{customer.plan_name}", headers=h).json()["max_batch_texts"] == 2
    )
    audit = client.get(f"/admin/audit?actor_key_id={admin.key_id}", headers=h).json()
    assert audit[0]["action"] == "plan.update"
    assert audit[0]["changes"] == {
        "before": {"max_batch_texts": 5},
        "after": {"max_batch_texts": 2},
    }
    assert audit[1]["action"] == "plan.create" and audit[1]["changes"]["max_batch_texts"] == 32


def test_rate_limits_must_admit_something_within_a_month(client, make_customer, db):
    """A limit of 0 refuses every request; one over more than 31 days kept a Redis counter that
    never expired, and customers on it got 500 from GET /v1/usage (a reset past 64 bits)."""
    h = make_customer(scopes=("admin",)).headers
    name = f"bounds-{uuid.uuid4().hex[:6]}"
    assert client.post("/admin/plans", headers=h, json={"name": name}).status_code == 201
    refused = {
        "0/second": "0 requests a second: from 1 to 2,147,483,647 a window",
        "10/second;0/minute": "0 requests a minute",
        "2147483648/hour": "from 1 to 2,147,483,647 a window",
        "1/999999999999999999 years": "a window may be at most 31 days long",
        "1/year": "at most 31 days long, not 360 days",
        "5/32 days": "not 32 days",
    }
    for limit, reason in refused.items():
        for answer in (
            client.post("/admin/plans", headers=h, json={"name": f"{name}-x", "rate_limit": limit}),
            client.patch(f"/admin/plans/{name}", headers=h, json={"rate_limit": limit}),
        ):
            assert answer.status_code == 422, (limit, answer.text)
            assert reason in answer.json()["detail"], (limit, answer.json()["detail"])
    for limit in ("1/31 days", "1/month", "2147483647/second"):
        answer = client.patch(f"/admin/plans/{name}", headers=h, json={"rate_limit": limit})
        assert answer.status_code == 200, (limit, answer.text)
    # The longest window works end to end: a customer on it sees its usage.
    customer = make_customer(rate_limit="3/31 days")
    usage = client.get("/v1/usage", headers=customer.headers)
    assert usage.status_code == 200, usage.text

    # A plan stored before the rule: named at start-up, and fixed before any other change.
    with db() as session:
        plan = session.exec(select(Plan).where(Plan.name == name)).one()
        plan.rate_limit = "1/year"
        session.add(plan)
        session.commit()
        assert "at most 31 days long" in plans_breaking_rules(session)[name]
    refused = client.patch(f"/admin/plans/{name}", headers=h, json={"monthly_quota": 5})
    assert refused.status_code == 422 and "at most 31 days" in refused.json()["detail"]
    fixed = client.patch(f"/admin/plans/{name}", headers=h, json={"rate_limit": "1/month"})
    assert fixed.status_code == 200, fixed.text
    with db() as session:
        assert name not in plans_breaking_rules(session)
