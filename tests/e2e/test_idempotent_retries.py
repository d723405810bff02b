"""Idempotency-Key against real `saas serve` processes (both databases): duplicates spread over
two workers, and retries after a SIGKILL between the usage commit and the answer (the technique
of test_crash_billing.py: kill the server under load, start it again, compare the ledger with
what clients received). With keys, every logical request is billed exactly once."""

import json
import socket
import threading
import time
from dataclasses import dataclass

import httpx
from sqlmodel import col, select

from saas.idempotency.models import IdempotencyRecord
from tests.e2e.test_crash_billing import TEXTS, Server
from tests.support.apps import two_workers_on_redis
from tests.support.marks import POSTGRES_ONLY
from tests.support.nlp import MODEL
from tests.support.polling import eventually
from tests.support.stores import redis_url
from tests.support.usage import billed

ENTITIES = f"/v1/{MODEL}/entities"
LEASE_SECONDS = "2"  # a claim of a killed request holds retries off this long


# PostgreSQL only, the deployment's database: SQLite's claims take the same path, covered
# in-process by tests/idempotency/test_other_workers.py (two more server starts saved).
@POSTGRES_ONLY
def test_duplicates_over_two_workers_are_answered_once(backend, settings, make_customer, db):
    customer = make_customer()
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def post(base: str) -> None:
        # A connection each: the two workers share the listening socket and take turns.
        with httpx.Client(timeout=30) as http:
            start.wait()
            answer = http.post(
                f"{base}{ENTITIES}",
                headers={"X-API-Key": customer.key, "Idempotency-Key": "spread"},
                json={"text": TEXTS[0]},
            )
        with lock:
            answers.append(answer)

    with two_workers_on_redis(backend, settings) as base:
        threads = [threading.Thread(target=post, args=(base,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert {a.content for a in answers} == {answers[0].content}
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == [""] + ["true"] * 7
    assert billed(db, customer.account_id) == 1


@dataclass
class Answered:
    text: str
    status: int
    body: bytes
    replayed: bool


class RetryingLoad:
    """Client threads that send each request under a key of its own and retry that same key
    (after a broken connection, 409 or 503) until it is answered, as a careful client does."""

    def __init__(self, base: str, key: str, threads: int = 6) -> None:
        self.base, self.key = base, key
        self.answered: dict[str, Answered] = {}
        self.broken = 0
        self.waited = 0  # 409: the key's claim is held by a request the kill cut short
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(headers={"X-API-Key": self.key}, timeout=10) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                key, text = f"load-{index}-{n}", TEXTS[(index + n) % len(TEXTS)]
                answer = self._until_answered(http, key, text)
                with self._lock:
                    self.answered[key] = answer

    def _until_answered(self, http: httpx.Client, key: str, text: str) -> Answered:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = http.post(
                    f"{self.base}{ENTITIES}", json={"text": text}, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:  # the server is down: try again until it is back
                with self._lock:
                    self.broken += 1
                response = None
            if response is not None and response.status_code not in (409, 503):
                replayed = response.headers.get("idempotent-replayed") == "true"
                return Answered(text, response.status_code, response.content, replayed)
            if response is not None and response.status_code == 409:
                with self._lock:
                    self.waited += 1
            if time.monotonic() > deadline:
                return Answered(text, 0, b"", False)
            time.sleep(0.2)  # a client's back-off

    def __enter__(self) -> "RetryingLoad":
        for thread in self._threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(150)

    def __exit__(self, *exc: object) -> None:
        self.finish()


def raw_post(port: int, key: str, idempotency_key: str, body: bytes) -> socket.socket:
    """Send a request and never read its answer: a client whose connection drops."""
    head = (
        f"POST {ENTITIES} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Idempotency-Key: {idempotency_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(head.encode() + body)
    return connection


def stored_answer(db, account_id: int, key: str) -> bool:
    with db() as session:
        statement = select(IdempotencyRecord.key).where(
            IdempotencyRecord.account_id == account_id,
            IdempotencyRecord.key == key,
            col(IdempotencyRecord.status).is_not(None),
        )
        return session.exec(statement).first() is not None


def test_sigkill_after_the_usage_commit_then_retry_is_billed_once(
    backend, settings, make_customer, db
):
    server = Server(backend, redis_url(), settings.redis_prefix)
    server.env["SAAS_IDEMPOTENCY_LEASE_SECONDS"] = LEASE_SECONDS
    lost, loaded, reference = make_customer(), make_customer(), make_customer()
    lost_body = json.dumps({"text": TEXTS[1]}).encode()  # a retry sends the same bytes
    try:
        server.start()
        with RetryingLoad(server.base, loaded.key) as load:
            # The usage (and the answer) of one request is committed, its client never reads
            # the answer, the server dies: the moment a client cannot tell whether it was
            # billed. Meanwhile the load's requests are cut at every stage of their way.
            connection = raw_post(server.port, lost.key, "lost-answer", lost_body)
            assert eventually(lambda: stored_answer(db, lost.account_id, "lost-answer"), 30)
            eventually(lambda: len(load.answered) >= 20, 30)
            server.kill()
            connection.close()
            server.start()  # the load's threads retry their keys until this one answers
            eventually(lambda: load.broken > 0 and len(load.answered) >= 40, 30)
            load.finish()
        with httpx.Client(timeout=30) as http:
            retry = http.post(
                f"{server.base}{ENTITIES}",
                headers={
                    "X-API-Key": lost.key,
                    "Idempotency-Key": "lost-answer",
                    "Content-Type": "application/json",
                },
                content=lost_body,
            )
            expected = {
                text: http.post(
                    f"{server.base}{ENTITIES}", headers={"X-API-Key": reference.key}, json=body
                ).content
                for text, body in ((text, {"text": text}) for text in TEXTS)
            }
    finally:
        server.stop()

    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == expected[TEXTS[1]]
    assert billed(db, lost.account_id) == 1

    answers = load.answered.values()
    replayed = sum(a.replayed for a in answers)
    print(
        f"load: {len(answers)} keys answered, {replayed} replayed, {load.broken} broken tries,"
        f" {load.waited} answered 409 (claim of a killed request)"
    )
    assert {a.status for a in answers} == {200}
    assert all(a.body == expected[a.text] for a in answers)
    assert billed(db, loaded.account_id) == len(answers)  # each key billed exactly once
