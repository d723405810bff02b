"""With the database unreachable, authentication fails closed with a clear 503, never a 500."""

import socket

import pytest
from fastapi.testclient import TestClient

from saas.app import create_app
from saas.auth import key_format
from saas.config import Settings
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem


@pytest.fixture(scope="module")
def unreachable_db_client():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{port}/test",
        log_level="CRITICAL",
        _env_file=None,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_key_lookup_without_database_is_503(unreachable_db_client):
    errors = metric(unreachable_db_client, "saas_database_errors_total", component="keys")
    response = unreachable_db_client.post(
        f"/v1/{MODEL}/entities",
        headers={"X-API-Key": key_format.generate_key()},
        json={"text": "Paris"},
    )
    assert response.headers["retry-after"] == "1"
    detail = "Authentication is temporarily unavailable; retry shortly."
    assert_problem(response, "authentication_unavailable", detail, retry_after=1)
    after = metric(unreachable_db_client, "saas_database_errors_total", component="keys")
    assert after - errors == 1


def test_readiness_reports_the_database(unreachable_db_client):
    response = unreachable_db_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("error")
    assert response.json()["checks"]["models"] == "ok"
