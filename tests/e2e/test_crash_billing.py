"""Kill -9 safety: under concurrent load, SIGKILL the server, start it again, and compare the
billable events in the database with the 2xx answers the client received. Every answer received
is billed; the only extra events allowed are requests cut off by the kill after their usage was
committed (the client saw a broken connection, never an answer). Faults of Redis, PostgreSQL and
one Gunicorn worker under load: tests/e2e/test_faults.py."""

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from tests.support.apps import SAAS, wait_until_ready
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually
from tests.support.servers import free_port, group_alive, start_process, stop_process
from tests.support.stores import redis_url
from tests.support.usage import billed

CLIENTS = 8  # client threads of the load
TEXTS = [
    "Angela Merkel met Emmanuel Macron in Berlin.",
    "Apple is looking at buying U.K. startup for $1 billion.",
    "The Amazon River flows through Brazil, Peru and Colombia.",
]


class Server:
    def __init__(self, backend: str, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "SAAS_DATABASE_URL": backend,
            "SAAS_REDIS_URL": redis_url,
            "SAAS_REDIS_PREFIX": prefix,
            "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
            "SAAS_LOG_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_process([SAAS, "serve", "--port", str(self.port)], self.env)
        wait_until_ready(self.base, self.process)

    def kill(self) -> None:
        """SIGKILL the server process alone; its inference process must then exit by itself."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)  # reaped: only the inference process can keep the group alive
        process = self.process
        assert eventually(lambda: not group_alive(process), 15, 0.1), (
            "inference process outlived the killed server"
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Load:
    """Client threads posting entities requests until stopped; counts what came back."""

    def __init__(self, base: str, key: str, threads: int = 8) -> None:
        self.base, self.key = base, key
        self.ok = 0
        self.broken = 0  # no answer: connection refused or cut
        self.other = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(headers={"X-API-Key": self.key}, timeout=10) as http:
            i = index
            while not self._stop.is_set():
                i += 1
                try:
                    response = http.post(
                        f"{self.base}/v1/{MODEL}/entities", json={"text": TEXTS[i % len(TEXTS)]}
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.broken += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.other += 1

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def server(backend, settings):
    server = Server(backend, redis_url(), settings.redis_prefix)
    yield server
    server.stop()


def test_sigkill_mid_load_loses_no_billed_answer(server, make_customer, db):
    customer = make_customer()
    total_ok = total_broken = 0
    for _round in range(3):
        server.start()
        with Load(server.base, customer.key, threads=CLIENTS) as load:
            # Killed under load: once every client has had answers, not after a guessed time.
            assert eventually(lambda: load.ok >= 4 * CLIENTS, 60), load.ok
            server.kill()
            # The clients meet the dead server (refused or cut connections) before the load ends.
            assert eventually(lambda: load.broken >= CLIENTS, 15), load.broken
        assert load.ok > 0 and load.other == 0
        total_ok += load.ok
        total_broken += load.broken
        count = billed(db, customer.account_id)
        assert total_ok <= count <= total_ok + total_broken, (total_ok, total_broken, count)
    server.start()  # a new process finds the ledger as the killed ones left it
    assert billed(db, customer.account_id) >= total_ok
