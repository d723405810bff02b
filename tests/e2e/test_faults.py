"""Faults under load, in the production shape: Gunicorn with 2 workers (ops/gunicorn.conf.py) on a
PostgreSQL cluster and a Redis of this module's own (never the machine's), with 8 clients
posting through the fault and the recovery:

- Redis SIGKILLed and started again, empty, on the same port (fail open, the default, and fail
  closed);
- PostgreSQL stopped as `pg_ctl stop -m immediate` does, and started again;
- both stopped at once (a host outage), Redis back first;
- one Gunicorn worker SIGKILLed.

For each: every request answered 2xx is billed (its X-Request-ID is a billable event), nothing is
billed twice or billed for an error answer, nothing answers 500 (503 with Retry-After is the
documented answer while a dependency is down), and the service recovers by itself: answers are
2xx again within RECOVERY_BOUND seconds of the repair. The figures are printed (pytest -s).

The servers and Gunicorn are started once for the module (each test has its own account) and
each fault is held until a number of requests were answered during it, never for a fixed time.
"""

import asyncio
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from saas.config import Settings
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from saas.problems import REGISTRY
from tests.e2e.test_gunicorn import Gunicorn, children
from tests.support.customers import Customer, new_customer
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.polling import eventually
from tests.support.problems import PROBLEM_MEMBERS, assert_problem
from tests.support.servers import PostgresServer, RedisServer, ServerUnavailable

ENTITIES = f"/v1/{MODEL}/entities"
TEXTS = [
    "Angela Merkel met Emmanuel Macron in Berlin.",
    "Apple is looking at buying U.K. startup for $1 billion.",
    "The Amazon River flows through Brazil, Peru and Colombia.",
]
CLIENTS = 8
WARM_UP = 20  # 2xx answers before the fault
DURING = 20  # answers to requests sent during the fault before it is repaired
STEADY = 40  # 2xx answers in a row that count as recovered
RECOVERY_BOUND = 10.0  # seconds from the repair to steady 2xx answers: generous, meaningful
WAIT = 30.0  # the longest any phase may take before the test fails


@dataclass(frozen=True, slots=True)
class Outcome:
    sent: float  # monotonic
    done: float
    status: int | None  # None: no answer (connection refused, reset or cut)
    request_id: str | None = None
    retry_after: str | None = None
    error_body: str | None = None  # the body of an answer that is not 2xx


class Load:
    """CLIENTS async clients in a thread of their own, each posting one request after another
    on a new connection (so the kernel spreads them over both workers) until stopped."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = {**headers, "Connection": "close"}
        self.outcomes: list[Outcome] = []  # appended by the load's thread, read by the test
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        async def clients() -> None:
            await asyncio.gather(*(self._client(index) for index in range(CLIENTS)))

        asyncio.run(clients())

    async def _client(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, timeout=30) as http:
            while not self._stop.is_set():
                index += 1
                sent = time.monotonic()
                try:
                    response = await http.post(ENTITIES, json={"text": TEXTS[index % len(TEXTS)]})
                except httpx.TransportError:
                    self.outcomes.append(Outcome(sent, time.monotonic(), None))
                    await asyncio.sleep(0.05)  # a client's pause before it retries
                    continue
                self.outcomes.append(
                    Outcome(
                        sent,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("x-request-id"),
                        response.headers.get("retry-after"),
                        response.text if response.status_code >= 300 else None,
                    )
                )

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def answered(self, since: float, ok: bool = False) -> int:
        """Requests sent at or after `since` that were answered (2xx only, with `ok`)."""
        return sum(
            1
            for o in list(self.outcomes)
            if o.sent >= since and o.status is not None and (not ok or 200 <= o.status < 300)
        )

    def ok_in_a_row(self) -> int:
        """2xx answers at the end of the record, in a row."""
        count = 0
        for outcome in reversed(sorted(list(self.outcomes), key=lambda o: o.done)):
            if outcome.status is None or not 200 <= outcome.status < 300:
                break
            count += 1
        return count

    def wait_until_recovered(self) -> None:
        assert eventually(lambda: self.ok_in_a_row() >= STEADY, timeout=WAIT), self.statuses()

    def details(self) -> str:
        """How many error answers said what, e.g. `40 × "Usage could not be recorded..."`."""
        counts: dict[str, int] = {}
        for outcome in list(self.outcomes):
            if outcome.error_body is not None:
                detail = json.loads(outcome.error_body)["detail"]
                counts[detail] = counts.get(detail, 0) + 1
        return "; ".join(f'{n} × "{detail}"' for detail, n in sorted(counts.items()))

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in list(self.outcomes):
            name = str(outcome.status) if outcome.status is not None else "no answer"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


@dataclass
class Figures:
    """What one fault run measured, printed as a row of docs/reliability.md's table."""

    scenario: str
    load: Load
    fault_at: float
    repaired_at: float
    billed: int = 0  # set by check()
    notes: list[str] = field(default_factory=list)

    def after_repair(self) -> list[Outcome]:
        return sorted(
            (o for o in self.load.outcomes if o.done >= self.repaired_at), key=lambda o: o.done
        )

    def first_ok(self) -> float:
        """Seconds from the repair to the first 2xx answer after it."""
        return (
            min(o.done for o in self.after_repair() if o.status is not None and o.status < 300)
            - self.repaired_at
        )

    def steady_ok(self) -> float:
        """Seconds from the repair to the answer from which every later answer was 2xx."""
        after = self.after_repair()
        start = len(after)
        while start > 0 and (status := after[start - 1].status) is not None and status < 300:
            start -= 1
        return (after[start].done if start < len(after) else self.repaired_at) - self.repaired_at

    def latencies(self, start: float, end: float) -> str:
        times = sorted(
            (o.done - o.sent) * 1000
            for o in self.load.outcomes
            if start <= o.sent < end and o.status is not None
        )
        if len(times) < 2:
            return "-"
        p99 = statistics.quantiles(times, n=100)[98]
        return f"{statistics.median(times):.0f} / {p99:.0f} ms"

    def row(self) -> str:
        during = self.latencies(self.fault_at, self.repaired_at)
        after = self.latencies(self.repaired_at, float("inf"))
        statuses = ", ".join(f"{n} {s}" for s, n in self.load.statuses().items())
        cells = [
            self.scenario,
            str(len(self.load.outcomes)),
            statuses,
            str(self.billed),
            f"{self.repaired_at - self.fault_at:.1f} s",
            f"{self.first_ok():.2f} s / {self.steady_ok():.2f} s",
            during,
            after,
            "; ".join(self.notes),
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| fault | requests sent | answered by status | billed | fault held | first 2xx / steady 2xx "
    "after repair | p50 / p99 during | p50 / p99 after | notes |"
)


@dataclass
class Stack:
    postgres: PostgresServer
    redis: RedisServer
    gunicorn: Gunicorn
    database_url: str
    db: Callable[[], Session]
    log: Path  # the Gunicorn's, one JSON record a line

    def customer(self) -> Customer:
        return new_customer(self.db, Settings(_env_file=None).models, monthly_quota=1_000_000)

    def ledger(self, account_id: int) -> list[tuple[str, int, int]]:
        """(request id, billable events, units) for each billed request of the account."""
        with self.db() as session:
            rows = session.execute(
                text(
                    "SELECT request_id, count(*), sum(units) FROM usage_events"
                    " WHERE account_id = :account AND billable GROUP BY request_id"
                ),
                {"account": account_id},
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def repair(self) -> None:
        """Whatever a failed test left down is started again for the next one."""
        if self.postgres.process is None:
            self.postgres.launch()
        if self.redis.process is None:
            self.redis.start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("faults")
    postgres = PostgresServer()
    redis = RedisServer(workdir)
    try:
        postgres.start()
        redis.start()
    except ServerUnavailable as error:
        postgres.stop()
        pytest.fail(str(error), pytrace=False)
    database_url = postgres.url
    upgrade(database_url)
    engine = make_engine(database_url)
    log = workdir / "gunicorn.log"
    # Default settings: SAAS_LIMITER_FAIL_OPEN true, SAAS_KEY_CACHE_TTL 10 s (a key looked up at
    # a test's start stays cached through its database outage).
    gunicorn = Gunicorn(database_url, "faults", log=log, redis=redis.url)
    try:
        gunicorn.start()
        yield Stack(postgres, redis, gunicorn, database_url, lambda: Session(engine), log)
    finally:
        gunicorn.stop()
        engine.dispose()
        redis.stop()
        postgres.stop()
        print(f"\n{HEADER}")
        for row in ROWS:
            print(row)


ROWS: list[str] = []  # the module's table, printed again when the stack stops


@pytest.fixture
def fault_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    stack.repair()


def check(figures: Figures, stack: Stack, account_id: int, log: Path | None = None) -> None:
    """The figures, printed, then the billing and answer rules every fault keeps; `log` is the
    Gunicorn's log (the module's by default): no request, of any client, answered 500."""
    outcomes = figures.load.outcomes
    ok = {o.request_id for o in outcomes if o.status is not None and 200 <= o.status < 300}
    errors = {o.request_id for o in outcomes if o.status is not None and o.status >= 300}
    no_answer = sum(1 for o in outcomes if o.status is None)
    ledger = stack.ledger(account_id)
    billed = {request_id for request_id, _, _ in ledger}
    figures.billed = len(billed)
    ROWS.append(figures.row())
    print(f"\n{HEADER}\n{figures.row()}")
    assert None not in ok, "a 2xx answer without X-Request-ID"
    assert {o.status for o in outcomes} <= {200, 503, None}, figures.load.statuses()
    assert all(o.retry_after for o in outcomes if o.status == 503), "503 without Retry-After"
    for outcome in outcomes:
        if outcome.error_body is not None:
            body = json.loads(outcome.error_body)  # problem details, with a registered code
            assert set(body) >= PROBLEM_MEMBERS and isinstance(body["detail"], str), body
            assert REGISTRY[body["code"]].status == outcome.status, body
    assert ok <= billed, f"{len(ok - billed)} answers 2xx not billed"
    assert all(events == 1 and units == 1 for _, events, units in ledger), "billed twice"
    assert not billed & errors, f"{len(billed & errors)} error answers billed"
    # A request cut off by the fault after its event was committed is billed without an answer
    # having arrived (DESIGN.md section 3); nothing else is billed.
    assert len(billed - ok) <= no_answer
    assert figures.steady_ok() <= RECOVERY_BOUND
    records = [json.loads(line) for line in (log or stack.log).read_text().splitlines() if line]
    failures = [r for r in records if r.get("status") == 500 or r.get("event") == "unhandled_error"]
    assert not failures


def warm_up(load: Load) -> None:
    assert eventually(lambda: load.answered(0, ok=True) >= WARM_UP, timeout=WAIT), load.statuses()


def hold_fault(load: Load, since: float) -> None:
    """Until DURING requests sent since the fault began have been answered."""
    assert eventually(lambda: load.answered(since) >= DURING, timeout=WAIT), load.statuses()


def admissions(base: str) -> tuple[float, float]:
    """(decided by Redis, decided in memory while Redis was unreachable), summed over workers."""
    with httpx.Client(base_url=base, timeout=5) as scraper:
        return (
            metric(scraper, "saas_admission_total", outcome="admitted"),
            metric(scraper, "saas_admission_total", outcome="fail_open"),
        )


def back_on_redis(base: str, since: float) -> float:
    """Seconds from `since` until no worker falls back to memory any more: STEADY admissions in
    a row decided by Redis."""
    last_fallback_at, last = time.monotonic(), admissions(base)

    def steady() -> bool:
        nonlocal last_fallback_at, last
        now = admissions(base)
        if now[1] > last[1]:
            last_fallback_at, last = time.monotonic(), now
        return now[0] - last[0] >= STEADY

    assert eventually(steady, timeout=WAIT, interval=0.1)
    return last_fallback_at - since


def test_redis_killed_mid_load_fail_open(fault_stack: Stack) -> None:
    """Each worker admits by its own in-memory limiter while Redis is down (the default,
    SAAS_LIMITER_FAIL_OPEN=true): every request is answered 2xx and billed."""
    stack = fault_stack
    customer = stack.customer()
    fallbacks_before = admissions(stack.gunicorn.base)[1]
    with Load(stack.gunicorn.base, customer.headers) as load:
        warm_up(load)
        fault_at = time.monotonic()
        stack.redis.kill()
        hold_fault(load, fault_at)
        repaired_at = time.monotonic()
        stack.redis.start()
        recovered = back_on_redis(stack.gunicorn.base, repaired_at)
        load.wait_until_recovered()
    fallbacks = admissions(stack.gunicorn.base)[1] - fallbacks_before
    figures = Figures("Redis SIGKILL, restarted empty (fail open)", load, fault_at, repaired_at)
    figures.notes.append(f"{fallbacks:.0f} admitted in memory; back on Redis {recovered:.2f} s")
    check(figures, stack, customer.account_id)
    assert set(load.statuses()) == {"200"}  # no answer lost either
    assert fallbacks >= DURING
    assert recovered <= RECOVERY_BOUND


def test_postgres_stopped_mid_load(fault_stack: Stack) -> None:
    """Usage cannot be committed: the answer is 503 with Retry-After, and nothing is billed
    (cached keys still authenticate; an uncached one gets 503 too, tests/test_database_down.py).
    Every 2xx, before and after, is billed."""
    stack = fault_stack
    customer = stack.customer()
    with Load(stack.gunicorn.base, customer.headers) as load:
        warm_up(load)
        fault_at = time.monotonic()
        stack.postgres.halt(signal.SIGQUIT)  # pg_ctl stop -m immediate
        hold_fault(load, fault_at)
        # A route that reads the database itself (was a 500).
        usage = httpx.get(f"{stack.gunicorn.base}/v1/usage", headers=customer.headers)
        repaired_at = time.monotonic()
        stack.postgres.launch()
        restarted = time.monotonic() - repaired_at
        load.wait_until_recovered()
    figures = Figures("PostgreSQL stop -m immediate, restarted", load, fault_at, repaired_at)
    figures.notes.append(f"accepting connections {restarted:.2f} s after the restart began")
    figures.notes.append(load.details())
    check(figures, stack, customer.account_id)
    assert "no answer" not in load.statuses()
    assert "503" in load.statuses()  # the fault was seen
    assert usage.headers.get("retry-after") == "1", usage.text
    detail = "The database is temporarily unavailable; retry shortly."
    assert_problem(usage, "database_unavailable", detail, retry_after=1)


def test_postgres_and_redis_down_together(fault_stack: Stack) -> None:
    """A host outage: both stopped, Redis back first (empty), then PostgreSQL. Admission must
    read the month's use from the ledger (this worker's memory never had it, then Redis lost
    it) and cannot: 503, never the 500 it used to be."""
    stack = fault_stack
    customer = stack.customer()
    with Load(stack.gunicorn.base, customer.headers) as load:
        warm_up(load)
        fault_at = time.monotonic()
        stack.postgres.halt(signal.SIGQUIT)
        stack.redis.kill()
        hold_fault(load, fault_at)
        redis_back = time.monotonic()
        stack.redis.start()
        hold_fault(load, redis_back)
        repaired_at = time.monotonic()
        stack.postgres.launch()
        load.wait_until_recovered()
    figures = Figures("PostgreSQL and Redis down, Redis back first", load, fault_at, repaired_at)
    figures.notes.append(load.details())
    check(figures, stack, customer.account_id)
    assert "no answer" not in load.statuses()
    assert "Rate limiting is temporarily unavailable" in load.details()


def test_worker_sigkilled_mid_load(fault_stack: Stack) -> None:
    """Gunicorn replaces the worker; the other one answers meanwhile. Requests the killed worker
    held get no answer (counted apart); none of them is answered 2xx unbilled."""
    stack = fault_stack
    customer = stack.customer()
    gunicorn = stack.gunicorn
    pids_before = gunicorn.worker_pids()
    victim = pids_before[0]
    with Load(gunicorn.base, customer.headers) as load:
        warm_up(load)
        fault_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            pids = gunicorn.worker_pids()
            return victim not in pids and len(pids) == 2

        assert eventually(replaced, timeout=WAIT)
        (new,) = set(gunicorn.worker_pids()) - set(pids_before)
        # Repaired once the new worker has forked its inference process (post_fork).
        assert eventually(lambda: children(new), timeout=WAIT)
        repaired_at = time.monotonic()
        hold_fault(load, fault_at)
        load.wait_until_recovered()
    figures = Figures("Gunicorn worker SIGKILL", load, fault_at, repaired_at)
    figures.notes.append(f"replaced after {repaired_at - fault_at:.2f} s")
    check(figures, stack, customer.account_id)


def test_redis_killed_mid_load_fail_closed(stack: Stack, tmp_path: Path) -> None:
    """With SAAS_LIMITER_FAIL_OPEN=false a Redis outage answers 503 with Retry-After, billed
    nothing, and 2xx again once Redis is back."""
    customer = stack.customer()
    gunicorn = Gunicorn(
        stack.database_url,
        "faults-closed",
        log=tmp_path / "gunicorn.log",
        redis=stack.redis.url,
        SAAS_LIMITER_FAIL_OPEN="false",
    )
    gunicorn.start()
    try:
        with Load(gunicorn.base, customer.headers) as load:
            warm_up(load)
            fault_at = time.monotonic()
            stack.redis.kill()
            hold_fault(load, fault_at)
            repaired_at = time.monotonic()
            stack.redis.start()
            load.wait_until_recovered()
    finally:
        gunicorn.stop()
        stack.repair()
    figures = Figures("Redis SIGKILL, restarted empty (fail closed)", load, fault_at, repaired_at)
    figures.notes.append(load.details())
    check(figures, stack, customer.account_id, gunicorn.log)
    assert "no answer" not in load.statuses()
    assert "503" in load.statuses()
