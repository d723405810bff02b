"""Gunicorn managing Uvicorn workers (ops/gunicorn.conf.py) on PostgreSQL and Redis, as
production runs it: the models are loaded once and shared, a dead inference process costs its
worker a fresh fork and nothing else, and SIGTERM finishes what is in flight."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from saas.config import Settings
from tests.support.apps import wait_until_ready
from tests.support.marks import POSTGRES_ONLY
from tests.support.metrics import metric
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually
from tests.support.servers import free_port, start_process, stop_process
from tests.support.stores import redis_url
from tests.support.usage import billed

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CONFIG = str(Path(__file__).resolve().parents[2] / "ops" / "gunicorn.conf.py")
ENTITIES = f"/v1/{MODEL}/entities"
TEXT = "John Doe is a Go developer at Google in London."


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the second field after the parenthesised command name.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


class Gunicorn:
    def __init__(
        self,
        backend: str,
        prefix: str,
        workers: int = 2,
        log: Path | None = None,
        redis: str | None = None,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "SAAS_DATABASE_URL": backend,
            "SAAS_REDIS_URL": redis or redis_url(),
            "SAAS_REDIS_PREFIX": prefix,
            "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
            "SAAS_LOG_LEVEL": "INFO",  # the request lines too (to a file, see the fixture)
            "SAAS_BIND": f"127.0.0.1:{self.port}",
            "SAAS_WORKERS": str(workers),
            "SAAS_GRACEFUL_TIMEOUT": "20",
            "SAAS_LOG_JSON": "true",
            **env,
        }
        self.workers = workers
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        stderr = self.log.open("wb") if self.log is not None else None
        self.process = start_process([GUNICORN, "--config", CONFIG], self.env, stderr=stderr)
        wait_until_ready(self.base, self.process, in_a_row=3 * self.workers)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture
def gunicorn(backend, settings, tmp_path):
    # Production's default, two lanes (the suite's other servers run one: tests/conftest.py).
    lanes = str(Settings.model_fields["engine_long_text_chars"].default)
    server = Gunicorn(
        backend,
        settings.redis_prefix,
        log=tmp_path / "gunicorn.log",
        SAAS_ENGINE_LONG_TEXT_CHARS=lanes,
    )
    server.start()
    yield server
    server.stop()


@POSTGRES_ONLY
def test_workers_share_one_copy_of_the_models(gunicorn, customer):
    response = httpx.post(
        f"{gunicorn.base}{ENTITIES}", headers=customer.headers, json={"text": TEXT}
    )
    assert response.status_code == 200
    assert [(e["text"], e["type"]) for e in response.json()["entities"]] == [
        ("John Doe", "PERSON"),
        ("Google", "ORG"),
        ("London", "GPE"),
    ]
    workers = gunicorn.worker_pids()
    assert len(workers) == 2
    # Each worker's inference processes (the short and the long lane) were forked from the
    # worker (which Gunicorn forked from the master that loaded the models), not spawned as new
    # interpreters.
    for worker in workers:
        lanes = children(worker)
        assert len(lanes) == 2
        # The long lane (forked second) yields the CPU to the short one.
        short, long = (os.getpriority(os.PRIO_PROCESS, pid) for pid in lanes)
        assert long - short == 10
        for inference in lanes:
            cmdline = Path(f"/proc/{inference}/cmdline").read_bytes()
            assert cmdline == Path(f"/proc/{worker}/cmdline").read_bytes()  # not spawn_main
            rollup = Path(f"/proc/{inference}/smaps_rollup").read_text()
            lines = rollup.splitlines()[1:]
            fields = {line.split(":")[0]: int(line.split()[1]) for line in lines}
            assert fields["Pss"] < fields["Rss"] / 2  # most of its memory is shared


@POSTGRES_ONLY
def test_a_dead_inference_process_costs_its_worker_a_fresh_fork(gunicorn, customer):
    before = gunicorn.worker_pids()
    victim = before[0]
    # Its long lane's (forked after the short one's): either lane's death stops the worker.
    short, long = children(victim)
    os.kill(long, signal.SIGKILL)

    def replaced() -> bool:
        return victim not in gunicorn.worker_pids() and len(gunicorn.worker_pids()) == 2

    assert eventually(replaced, timeout=30)
    # Every worker answers again; no model had to be loaded (the fork has them).
    started = time.monotonic()
    wait_until_ready(gunicorn.base, gunicorn.process, in_a_row=6, timeout=30)
    assert time.monotonic() - started < 15
    url = f"{gunicorn.base}{ENTITIES}"
    statuses = {
        httpx.post(url, headers=customer.headers, json={"text": TEXT}).status_code
        for _ in range(10)
    }
    assert statuses == {200}


def reset_by_peer(error: BaseException) -> bool:
    """Whether `error` comes from a TCP reset (httpx wraps httpcore's error, which wraps the
    socket's)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ConnectionResetError):
        cause = cause.__cause__
    return cause is not None


class ClosingLoad:
    """Client threads, one connection per request (so a request is either sent whole or never
    connects), posting until the server stops accepting."""

    def __init__(self, base: str, headers: dict[str, str], threads: int = 6) -> None:
        self.base, self.headers = base, {**headers, "Connection": "close"}
        self.statuses: list[int] = []
        self.cut_off = 0  # connected, sent, and then no answer
        # Of those, the ones reset by the kernel: see the SIGTERM test.
        self.resets = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.post(
                    f"{self.base}{ENTITIES}", headers=self.headers, json={"text": TEXT}, timeout=30
                )
            except httpx.ConnectError:
                self._stop.set()  # the listener is closed: the server is going away
                return
            except httpx.TransportError as error:
                with self._lock:
                    self.cut_off += 1
                    if reset_by_peer(error):
                        self.resets += 1
                    else:
                        self.errors.append(repr(error))
                continue
            with self._lock:
                self.statuses.append(response.status_code)

    def __enter__(self) -> "ClosingLoad":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # the test failed: stop the clients rather than wait for them
            self._stop.set()
        for thread in self._threads:
            thread.join(60)


@POSTGRES_ONLY
def test_sigterm_finishes_what_is_in_flight_and_bills_it(gunicorn, customer, db):
    assert gunicorn.process is not None
    with ClosingLoad(gunicorn.base, customer.headers) as load:
        assert eventually(lambda: len(load.statuses) >= 30, timeout=30)
        gunicorn.process.send_signal(signal.SIGTERM)  # the master only, as an orchestrator does
        assert gunicorn.process.wait(60) == 0
    # No request a worker read was left unanswered: a worker that closed such a connection, or
    # exited with it open, would have sent FIN, which the client sees as "disconnected without
    # a response". What remains are resets: connections the kernel had queued on the listening
    # socket when the last worker closed it, with clients connecting nonstop and straight to
    # Gunicorn. No worker read them, so none was run or billed (below); in production the proxy
    # stops sending before SIGTERM (README, Deploy).
    assert load.cut_off == load.resets, load.errors
    assert set(load.statuses) <= {200, 503} and load.statuses.count(200) >= 30
    assert billed(db, customer.account_id) == load.statuses.count(200)
    assert not children(gunicorn.process.pid)


# A worker SIGKILLed under load: tests/e2e/test_faults.py.


@POSTGRES_ONLY
def test_metrics_and_logs_add_up_across_the_workers(gunicorn, customer):
    """/metrics on the app's port sums every worker's samples; every log line is JSON."""
    labels = {"route": "/v1/{model}/entities", "status": "200"}
    with httpx.Client(base_url=gunicorn.base) as scraper:
        before = metric(scraper, "saas_http_requests_total", **labels)
        for _ in range(40):  # a new connection each: both workers take some
            response = httpx.post(
                f"{gunicorn.base}{ENTITIES}",
                headers={**customer.headers, "Connection": "close"},
                json={"text": TEXT},
            )
            assert response.status_code == 200
        # Every scrape, whichever worker answers it, counts all 40.
        scrapes = {metric(scraper, "saas_http_requests_total", **labels) - before for _ in range(6)}
    assert scrapes == {40}
    assert gunicorn.process is not None
    gunicorn.process.send_signal(signal.SIGTERM)
    assert gunicorn.process.wait(60) == 0
    lines = [line for line in gunicorn.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    requests = [r for r in records if r.get("event") == "request" and r.get("status") == 200]
    assert len(requests) >= 40
    assert all(r["route"] == "/v1/{model}/entities" for r in requests if r["path"] == ENTITIES)
    assert {"request_id", "account_id", "route", "status", "duration_ms"} <= requests[0].keys()
    assert customer.key not in gunicorn.log.read_text() and TEXT not in gunicorn.log.read_text()
