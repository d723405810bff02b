"""A key held by a request in another worker or host (its claim row, written here directly):
the duplicate waits and replays its answer, takes the key over when that worker died (the
claim's lease ran out), or gets 409 with Retry-After after waiting its bound (both databases)."""

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx

from saas.idempotency import store
from saas.idempotency.store import Answer, Completion
from saas.pipeline.idempotency import IdempotencyMiddleware
from saas.ratelimit.admission import Admission
from saas.usage.ledger import Event, write_events
from saas.web.context import Area, Metering, RequestContext, set_context
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem

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
    return client.app.state.engine


def middleware_alone(route, engine, *, lease: float, wait: float) -> IdempotencyMiddleware:
    """The idempotency step in front of `route`, without the rest of the app (its admission in
    memory: these tests never reach a replay)."""
    return IdempotencyMiddleware(
        route, engine=engine, admission=Admission(fail_open=True), lease=lease, wait=wait
    )


async def post_alone(middleware: IdempotencyMiddleware, customer, key: str) -> httpx.Response:
    """POST the body under `key` through `middleware`, as the customer's authenticated request."""

    async def app(scope, receive, send):
        context = RequestContext(uuid.uuid4().hex, Area.customer, Metering("entities", True))
        # A stand-in for the principal: the middleware reads these two fields only.
        context.principal = SimpleNamespace(  # type: ignore[assignment]
            account_id=customer.account_id, rate_limit="1000/second"
        )
        set_context(scope, context)
        await middleware(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        return await http.post(ENTITIES, headers=headers, content=BODY)


def test_a_duplicate_gets_409_when_the_other_request_runs_too_long(db, customer):
    engine = db().get_bind()
    claim_elsewhere(engine, customer.account_id, "slow", timedelta(seconds=30))
    ran = []

    async def route(scope, receive, send):
        ran.append(scope["path"])

    middleware = middleware_alone(route, engine, lease=60, wait=0.3)
    started = time.monotonic()
    answer = asyncio.run(post_alone(middleware, customer, "slow"))
    assert answer.status_code == 409 and ran == []
    assert 0.3 <= time.monotonic() - started < 5
    assert 1 <= int(answer.headers["retry-after"]) <= 31
    assert "still running" in assert_problem(answer, "idempotency_key_in_use")["detail"]


def test_a_request_longer_than_its_lease_keeps_its_claim(db, customer):
    """The claim is renewed while the request runs: another worker asking after several
    leases finds it held (without renewal it would take the key over, run and bill again)."""
    engine = db().get_bind()
    lease = 0.3
    found: list[object] = []

    async def route(scope, receive, send):
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
        found.append(other)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = middleware_alone(route, engine, lease=lease, wait=0.3)
    assert asyncio.run(post_alone(middleware, customer, "long")).status_code == 503
    assert len(found) == 1 and found[0] is not None, "another worker took the key over"
