"""Fixtures: the whole suite runs against PostgreSQL + Redis and against the embedded SQLite
default. Both are real servers: the ones SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL name (CI's),
else private ones the run starts and stops (tests/support/stores.py). A missing one fails the run,
it is never skipped. What tests import (helpers, marks, constants) is in tests/support."""

import os
import subprocess
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from saas.app import create_app
from saas.config import Settings
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from tests.support.apps import SAAS
from tests.support.customers import Customer, new_customer
from tests.support.nlp import FRENCH, MODEL, read_texts
from tests.support.servers import RedisClusterServers, RedisServer, ServerUnavailable
from tests.support.stores import REDIS_PREFIX, SERVERS, postgres_schema_url, postgres_url, redis_url

if TYPE_CHECKING:
    from spacy.language import Language

# Servers the tests start (saas serve, Gunicorn, the CLI) run one inference lane: a second one
# costs every start about 3 s. The tests of the lanes themselves ask for two (tests/nlp/
# test_lanes.py, tests/e2e/test_gunicorn.py, tests/nlp/test_batch_failures.py).
os.environ.setdefault("SAAS_ENGINE_LONG_TEXT_CHARS", "0")


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the session's fixtures are torn down (schemas dropped), also when interrupted."""
    SERVERS.stop()


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


@pytest.fixture
def make_customer(db: Callable[[], Session], settings: Settings) -> Callable[..., Customer]:
    """A new plan, account and key per call, so tests never share state."""

    def _make(**fields: Any) -> Customer:
        return new_customer(db, settings.models, **fields)

    return _make


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
def nlp() -> "Language":
    """The full default pipeline, the reference every answer must equal."""
    import spacy

    return spacy.load(Settings(_env_file=None).models[MODEL])


@pytest.fixture(scope="session")
def nlp_fr() -> "Language":
    import spacy

    return spacy.load(Settings(_env_file=None).models[FRENCH])


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return read_texts("texts.txt")


@pytest.fixture(scope="session")
def texts_fr() -> list[str]:
    return read_texts("texts_fr.txt")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _started_cluster(workdir: Path) -> Iterator[RedisClusterServers]:
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
    with _started_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of the test's own, which it may break."""
    with _started_cluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def redis_for(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """The URL of the run's Redis ("single") or Redis Cluster ("cluster")."""

    def _url(kind: str) -> str:
        if kind == "cluster":
            cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
            return cluster.url
        return redis_url()

    return _url
