"""CORS is closed unless SAAS_CORS_ALLOW_ORIGINS names origins; then only those origins get
CORS headers, a preflight needs no key, and scripts may read the rate-limit headers."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from saas.app import create_app
from saas.config import Settings
from saas.pipeline.cors import ALLOWED_HEADERS, EXPOSED_HEADERS
from saas.ratelimit.headers import rate_limit_headers
from saas.ratelimit.windows import Decision, WindowState, parse_windows
from tests.support.marks import SQLITE_ONLY
from tests.support.nlp import MODEL

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
ENTITIES = f"/v1/{MODEL}/entities"


def preflight(client: TestClient, origin: str, path: str = ENTITIES) -> dict[str, str]:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    response = client.options(path, headers=headers)
    return {"status": str(response.status_code), **response.headers}


@SQLITE_ONLY
def test_closed_by_default(client, customer):
    assert Settings(_env_file=None).cors_allow_origins == []
    simple = client.get("/v1/models", headers={**customer.headers, "Origin": ALLOWED})
    assert simple.status_code == 200
    assert not [name for name in simple.headers if name.lower().startswith("access-control-")]
    answer = preflight(client, ALLOWED)
    assert "access-control-allow-origin" not in answer
    assert answer["status"] in ("401", "405"), answer  # no preflight answered for anyone


@pytest.fixture
def cors_client(settings: Settings) -> Iterator[TestClient]:
    """An app with one allowed origin; no lifespan: these requests never reach a model."""
    app = create_app(settings.model_copy(update={"cors_allow_origins": [ALLOWED]}))
    yield TestClient(app)


@SQLITE_ONLY
def test_a_configured_origin_is_allowed_without_a_key(cors_client):
    answer = preflight(cors_client, ALLOWED)
    assert answer["status"] == "200", answer
    assert answer["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in answer
    allowed = {h.strip().lower() for h in answer["access-control-allow-headers"].split(",")}
    assert {h.lower() for h in ALLOWED_HEADERS} <= allowed
    assert "POST" in answer["access-control-allow-methods"]
    assert "x-request-id" in answer  # still inside the request context

    # A simple request's answer, even a refusal, is readable by the allowed origin's script,
    # and so are the headers that explain it.
    refused = cors_client.get("/v1/models", headers={"Origin": ALLOWED})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED
    exposed = {
        h.strip().lower() for h in refused.headers["access-control-expose-headers"].split(",")
    }
    assert {
        "x-ratelimit-remaining",
        "retry-after",
        "x-request-id",
        "idempotent-replayed",
    } <= exposed


@SQLITE_ONLY
def test_another_origin_gets_no_cors_headers(cors_client):
    answer = preflight(cors_client, OTHER)
    assert answer["status"] == "400", answer  # Starlette refuses a disallowed preflight
    assert "access-control-allow-origin" not in answer
    simple = cors_client.get("/v1/models", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in simple.headers


def test_every_rate_limit_header_is_exposed() -> None:
    """A rate-limit header added later must be added to the exposed list too."""
    windows = parse_windows("5/second;100/minute")
    decision = Decision(
        outcome="rate_limited",
        windows=tuple(WindowState(window, remaining=0, reset=1.0) for window in windows),
        retry_after=1.0,
        now=0.0,
    )
    emitted = {name.decode() for name, _ in rate_limit_headers(decision)}
    assert emitted <= {h.lower() for h in EXPOSED_HEADERS}
