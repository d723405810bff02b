"""A key held by a request in another worker or host (its claim row, written here directly):
the duplicate waits and replays its answer, takes the key over when that worker died (the
claim's lease ran out), or gets 409 with Retry-After after waiting its bound (both databases)."""

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from starlette.responses import Response

from saas.idempotency import store
from saas.idempotency.store import Answer, Completion
from saas.pipeline.idempotency import Claim, IdempotencyKeys
from saas.usage.ledger import Event, write_events
from tests.support.apps import services
from tests.support.nlp import MODEL

ENTITIES = f"/v1/{MODEL}/entities"
BODY = json.dumps({"text": "Paris is in France."}).encode()


def fingerprint(path: str = ENTITIES) -> str:
    return store.fingerprint("POST", path, b"", BODY)


def claim_elsewhere(engine, account_id: int, key: str, lease: timedelta) -> str:
    request_id = uuid.uuid4().hex
    found = store.claim(
        engine,
        account_id=account_id,
        key=key,
        fingerprint=fingerprint(),
        request_id=request_id,
        now=datetime.now(UTC),
        lease=lease,
    )
    assert found is None
    return request_id


def post(client, customer, key: str):
    headers = {**customer.headers, "Idempotency-Key": key, "Content-Type": "application/json"}
    return client.post(ENTITIES, headers=headers, content=BODY)


def test_a_duplicate_waits_for_the_other_worker_and_replays_its_answer(client, customer, db):
    engine = db().get_bind()
    request_id = claim_elsewhere(engine, customer.account_id, "elsewhere", timedelta(minutes=1))
    answer = Answer(200, "application/json", b'{"entities":["from the other worker"]}')

    def other_worker_answers() -> None:
        time.sleep(0.3)  # the other worker's request is still running meanwhile
        now = datetime.now(UTC)
        account = customer.account_id
        event = Event(request_id, now, account, None, "entities", MODEL, 200, 19, 1, 1.0, True)
        kept = Completion(account, "elsewhere", request_id, answer, now + timedelta(hours=1))
        write_events(engine, [event], [kept])

    other = threading.Thread(target=other_worker_answers)
    other.start()
    replayed = post(client, customer, "elsewhere")
    other.join()
    assert replayed.status_code == 200 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == answer.body


def test_the_claim_of_a_dead_worker_ends_with_its_lease(client, customer):
    claim_elsewhere(db_engine(client), customer.account_id, "dead", timedelta(seconds=1))
    answer = post(client, customer, "dead")
    assert answer.status_code == 200 and "idempotent-replayed" not in answer.headers


def db_engine(client):
    return services(client).database


def settle(keys: IdempotencyKeys, customer, key: str):
    """What the admission step learns of `key` for the customer's request, from the
    idempotency keys alone (no app: these tests never reach a replay)."""
    return keys.settle(
        account_id=customer.account_id,
        key=key,
        fingerprint=fingerprint(),
        request_id=uuid.uuid4().hex,
    )


def test_a_duplicate_gets_409_when_the_other_request_runs_too_long(db, customer):
    engine = db().get_bind()
    claim_elsewhere(engine, customer.account_id, "slow", timedelta(seconds=30))
    keys = IdempotencyKeys(engine, lease=60, wait=0.3)
    started = time.monotonic()
    answer = asyncio.run(settle(keys, customer, "slow"))
    assert isinstance(answer, Response) and answer.status_code == 409
    assert 0.3 <= time.monotonic() - started < 5
    assert 1 <= int(answer.headers["retry-after"]) <= 31
    problem = json.loads(bytes(answer.body))
    assert problem["code"] == "idempotency_key_in_use" and "still running" in problem["detail"]


def test_a_request_longer_than_its_lease_keeps_its_claim(db, customer):
    """The claim is renewed while the request runs: another worker asking after several
    leases finds it held (without renewal it would take the key over, run and bill again)."""
    engine = db().get_bind()
    lease = 0.3
    keys = IdempotencyKeys(engine, lease=lease, wait=0.3)

    async def run_long() -> object:
        claim = await settle(keys, customer, "long")
        assert isinstance(claim, Claim)
        started = time.monotonic()
        while time.monotonic() - started < 4 * lease:  # a request that outlives 4 leases
            await asyncio.sleep(0.05)
        other = await asyncio.to_thread(
            store.claim,
            engine,
            account_id=customer.account_id,
            key="long",
            fingerprint=fingerprint(),
            request_id=uuid.uuid4().hex,
            now=datetime.now(UTC),
            lease=timedelta(seconds=lease),
        )
        await claim.end(None)
        return other

    assert asyncio.run(run_long()) is not None, "another worker took the key over"
