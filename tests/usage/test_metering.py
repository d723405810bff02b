"""Usage events, rollups, the usage API, invoices and reconciliation (both databases)."""

import csv
import io
import uuid
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import select

from saas.kit import months
from saas.usage import service
from saas.usage.ledger import Event, write_events
from saas.usage.models import UsageEvent, UsageRollup
from tests.support.nlp import MODEL
from tests.support.usage import wait_for_events

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


def test_successes_and_rejections_are_counted_apart(client, make_customer, db):
    customer = make_customer(rate_limit="7/minute", monthly_quota=100)
    ok = [client.post(ENTITIES, headers=customer.headers, json=BODY) for _ in range(5)]
    # Bodies the route refuses (422): admitted, so they count toward the rate limit.
    invalid = [client.post(ENTITIES, headers=customer.headers, json={"txt": ""}) for _ in range(2)]
    limited = [client.post(ENTITIES, headers=customer.headers, json=BODY) for _ in range(3)]
    assert [r.status_code for r in ok + invalid + limited] == [200] * 5 + [422] * 2 + [429] * 3

    events = wait_for_events(db, customer.account_id, 10)
    assert len(events) == 10
    assert sum(e.billable for e in events) == 5
    counts: dict[tuple[str, int], int] = {}
    for event in events:
        counts[(event.endpoint, event.status)] = counts.get((event.endpoint, event.status), 0) + 1
        assert event.key_id == customer.key_id
    assert counts == {("entities", 200): 5, ("entities", 422): 2, ("entities", 429): 3}
    ok_event = next(e for e in events if e.status == 200)
    assert ok_event.chars == len(BODY["text"]) and ok_event.model == MODEL and ok_event.units == 1
    request_ids = {r.headers["x-request-id"] for r in ok}
    assert request_ids <= {e.request_id for e in events}

    with db() as session:
        rollups = session.exec(
            select(UsageRollup).where(UsageRollup.account_id == customer.account_id)
        ).all()
        assert sum(r.requests for r in rollups) == 10
        assert sum(r.billable_units for r in rollups) == 5
        month = months.current()
        assert service.reconcile(session, customer.account_id, month) == {
            "events": 5,
            "rollups": 5,
            "invoice": 5,
        }


def test_customer_usage_endpoint(client, make_customer):
    customer = make_customer(monthly_quota=10, max_text_chars=500)
    for _ in range(3):
        assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
    assert (
        client.post(f"/v1/{MODEL}/tokens", headers=customer.headers, json=BODY).status_code == 200
    )
    usage = client.get("/v1/usage", headers=customer.headers)
    assert usage.status_code == 200
    body = usage.json()
    assert body["billable_requests"] == 4 and isinstance(body["billable_requests"], int)
    assert body["characters"] == 4 * len(BODY["text"])
    assert body["month"] == months.current()
    assert {e["endpoint"]: e["billable_requests"] for e in body["by_endpoint"]} == {
        "entities": 3,
        "tokens": 1,
    }
    assert body["by_day"][0]["day"] == datetime.now(UTC).date().isoformat()
    assert body["plan"]["monthly_quota"] == 10 and body["plan"]["max_text_chars"] == 500
    assert body["remaining_quota"] == 6


def synthetic_events(account_id: int, count: int, *, billable: bool = True) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(
            uuid.uuid4().hex,
            now,
            account_id,
            None,
            "entities",
            MODEL,
            200 if billable else 429,
            10,
            1,
            1.0,
            billable,
        )
        for _ in range(count)
    ]


def test_writing_the_same_events_twice_changes_nothing(make_customer, db, settings):
    from saas.kit.db import make_engine

    customer = make_customer()
    engine = make_engine(settings.database_url)
    events = synthetic_events(customer.account_id, 7) + synthetic_events(
        customer.account_id, 2, billable=False
    )
    try:
        assert len(write_events(engine, events)) == 9
        assert write_events(engine, events) == []
        assert write_events(engine, events[:3] + events[:3]) == []
    finally:
        engine.dispose()
    with db() as session:
        assert (
            session.exec(
                select(func.count())
                .select_from(UsageEvent)
                .where(UsageEvent.account_id == customer.account_id)
            ).one()
            == 9
        )
        assert service.reconcile(session, customer.account_id, months.current()) == {
            "events": 7,
            "rollups": 7,
            "invoice": 7,
        }


def test_invoice_amounts_at_the_thousand_boundary(client, make_customer, db, settings):
    from saas.kit.db import make_engine

    admin = make_customer(scopes=("admin",))
    expected = {0: 0, 999: 150, 1000: 150, 1001: 151}
    customers = {}
    engine = make_engine(settings.database_url)
    try:
        for billable in expected:
            customer = make_customer(price_cents_per_month=1000, price_cents_per_1000_requests=150)
            write_events(engine, synthetic_events(customer.account_id, billable))
            customers[billable] = customer
    finally:
        engine.dispose()
    month = months.current()
    response = client.get(f"/admin/invoices?month={month}", headers=admin.headers)
    assert response.status_code == 200
    lines = {line["account_id"]: line for line in response.json()["invoices"]}
    for billable, metered in expected.items():
        line = lines[customers[billable].account_id]
        assert line["billable_requests"] == billable
        assert (line["base_fee_cents"], line["metered_cents"], line["total_cents"]) == (
            1000,
            metered,
            1000 + metered,
        )
    as_csv = client.get(f"/admin/invoices?month={month}&format=csv", headers=admin.headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = {int(r["account_id"]): r for r in csv.DictReader(io.StringIO(as_csv.text))}
    for billable, metered in expected.items():
        row = rows[customers[billable].account_id]
        assert int(row["billable_requests"]) == billable
        assert int(row["total_cents"]) == 1000 + metered
    bad = client.get("/admin/invoices?month=2026-13", headers=admin.headers)
    assert bad.status_code == 422 and isinstance(bad.json()["detail"], str)


def test_admin_usage_filters(client, make_customer, db):
    admin = make_customer(scopes=("admin",))
    customer = make_customer(rate_limit="2/minute")
    for _ in range(3):
        client.post(ENTITIES, headers=customer.headers, json=BODY)
    assert len(wait_for_events(db, customer.account_id, 3)) == 3  # the 429 is queued, not awaited
    daily = client.get(f"/admin/usage?account={customer.account_id}", headers=admin.headers).json()
    statuses = {row["status"]: row["requests"] for row in daily["rows"]}
    assert statuses == {200: 2, 429: 1}
    hourly = client.get(
        f"/admin/usage?account={customer.account_id}&granularity=hour&status=200",
        headers=admin.headers,
    ).json()
    assert len(hourly["rows"]) == 1 and hourly["rows"][0]["billable_requests"] == 2
    assert hourly["rows"][0]["bucket"].endswith(":00:00+00:00")
    assert client.get("/admin/usage", headers=customer.headers).status_code == 403
