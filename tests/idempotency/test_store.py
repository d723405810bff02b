"""Claims, leases, release and expiry of Idempotency-Key records (both databases), with the
clock passed in instead of waited for."""

import uuid
from datetime import UTC, datetime, timedelta

from saas.idempotency import store
from saas.idempotency.store import Answer, Completion
from saas.usage.ledger import Event, write_events

LEASE = timedelta(seconds=60)


def claim(engine, account_id: int, key: str, request_id: str, now: datetime, fingerprint="f1"):
    return store.claim(
        engine,
        account_id=account_id,
        key=key,
        fingerprint=fingerprint,
        request_id=request_id,
        now=now,
        lease=LEASE,
    )


def event(account_id: int, request_id: str, now: datetime) -> Event:
    return Event(request_id, now, account_id, None, "entities", None, 200, 5, 1, 1.0, True)


def test_one_claim_wins_and_a_dead_claim_ends_with_its_lease(db, customer):
    engine = db().get_bind()
    now = datetime.now(UTC)
    key = uuid.uuid4().hex
    assert claim(engine, customer.account_id, key, "a" * 32, now) is None
    running = claim(engine, customer.account_id, key, "b" * 32, now + timedelta(seconds=30))
    assert running is not None and running.answer is None and running.fingerprint == "f1"
    assert running.expires_at == now + LEASE
    # Its worker died: once the lease is over, the next request takes the key over.
    assert claim(engine, customer.account_id, key, "b" * 32, now + LEASE) is None


def test_the_answer_is_stored_with_the_usage_event_and_kept_24_hours(db, customer):
    engine = db().get_bind()
    now = datetime.now(UTC)
    key, request_id = uuid.uuid4().hex, uuid.uuid4().hex
    assert claim(engine, customer.account_id, key, request_id, now) is None
    body = b'{"entities":[]}' * 50
    answer = Answer(200, "application/json", body)
    kept = now + store.KEEP_ANSWERS
    completion = Completion(customer.account_id, key, request_id, answer, kept)
    assert write_events(engine, [event(customer.account_id, request_id, now)], [completion])
    # Release never drops a stored answer.
    store.release(engine, account_id=customer.account_id, key=key, request_id=request_id)
    later = now + timedelta(hours=23)
    store.delete_expired(engine, now=later)  # `saas maintain`: other tests' rows may go
    found = claim(engine, customer.account_id, key, "c" * 32, later)
    assert found is not None and found.answer == answer
    assert store.delete_expired(engine, now=kept) >= 1
    assert claim(engine, customer.account_id, key, "c" * 32, kept) is None


def test_release_frees_only_its_own_claim(db, customer):
    engine = db().get_bind()
    now = datetime.now(UTC)
    key = uuid.uuid4().hex
    assert claim(engine, customer.account_id, key, "a" * 32, now) is None
    store.release(engine, account_id=customer.account_id, key=key, request_id="b" * 32)
    assert claim(engine, customer.account_id, key, "b" * 32, now) is not None
    store.release(engine, account_id=customer.account_id, key=key, request_id="a" * 32)
    assert claim(engine, customer.account_id, key, "b" * 32, now, fingerprint="f2") is None
