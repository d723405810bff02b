"""The run's PostgreSQL and Redis: the ones SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL name
(CI's), else private ones started on first use (servers.SessionServers) and stopped when the run
ends (tests/conftest.py). A missing one fails the test that needs it, never skips it."""

import uuid
from collections.abc import Callable

import pytest

from tests.support.servers import ServerUnavailable, SessionServers

# Started on first use, not at import: a run of tests that need no server starts none.
SERVERS = SessionServers()
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


def postgres_schema_url(schema: str) -> str:
    """The run's PostgreSQL with `schema` as the search path: a database of the test's own."""
    base = postgres_url()
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}"
