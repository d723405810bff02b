"""The production stack on one host, as `make stack` runs it (ops/stack.py): Traefik in front of
Gunicorn with 2 workers, on PostgreSQL and a Redis of the test's own, the API under /api."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import chromium
from tests.e2e.test_docs import Offline, try_entities
from tests.support.marks import POSTGRES_ONLY
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually
from tests.support.servers import free_port, start_process, stop_process

STACK = str(Path(__file__).resolve().parents[2] / "ops" / "stack.py")
TEXT = "John Doe is a Go developer at Google in London."


class Stack:
    def __init__(self, backend: str, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "SAAS_DATABASE_URL": backend,
            "SAAS_REDIS_URL": redis_url,
            "SAAS_REDIS_PREFIX": prefix,
            "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
            "SAAS_LOG_LEVEL": "WARNING",
            "SAAS_AUTH_FAILURES_PER_IP": "3/minute",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.process = start_process(
            [sys.executable, STACK, "--port", str(self.port), "--workers", "2"], self.env
        )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, "stack exited"
            try:
                return httpx.get(f"{self.api}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert eventually(ready, timeout=120, interval=0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture
def stack(backend, settings, own_redis):
    server = Stack(backend, own_redis.url, settings.redis_prefix)
    server.start()
    yield server
    server.stop()


def client_from(address: str) -> httpx.Client:
    """A client whose connections leave from `address` (any of 127.0.0.0/8 is this host)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


@POSTGRES_ONLY
def test_the_api_is_public_under_api_only(stack, customer):
    response = httpx.post(
        f"{stack.api}/v1/{MODEL}/entities", headers=customer.headers, json={"text": TEXT}
    )
    assert response.status_code == 200
    assert response.json()["entities"] == [
        {"start": 0, "end": 8, "type": "PERSON", "text": "John Doe"},
        {"start": 30, "end": 36, "type": "ORG", "text": "Google"},
        {"start": 40, "end": 46, "type": "GPE", "text": "London"},
    ]
    assert len(response.headers["x-request-id"]) == 32  # the app's id, through the proxy
    schema = httpx.get(f"{stack.api}/openapi.json").json()
    assert schema["servers"] == [{"url": "/api"}]
    root = f"http://127.0.0.1:{stack.port}"
    for page in ("docs", "redoc"):  # their files, through the proxy, under /api
        docs = httpx.get(f"{stack.api}/{page}")
        assert docs.status_code == 200 and 'data-spec-url="/api/openapi.json"' in docs.text
        assets = re.findall(r'(?:href|src)="(/api/docs/static/[^"]+)"', docs.text)
        assert len(assets) >= 3, docs.text
        for url in assets:
            assert httpx.get(f"{root}{url}").status_code == 200, url
    # In a browser: "Try it out" sends its request under /api too (the schema's `servers`).
    with chromium() as browser:
        offline = Offline(browser, root)
        try_entities(offline, f"{stack.api}/docs", customer.key)
    # The metrics are for the scraper on the app's own port, never public.
    assert httpx.get(f"{stack.api}/metrics").status_code == 404
    assert httpx.get(f"{root}/metrics").status_code == 404
    assert httpx.get(f"{root}/v1/models", headers=customer.headers).status_code == 404


@POSTGRES_ONLY
def test_the_failed_key_guard_sees_the_client_not_the_proxy(stack, customer):
    url = f"{stack.api}/v1/models"
    bad = {"Authorization": "Token sk_live_" + "A" * 36}
    with client_from("127.0.0.2") as guesser, client_from("127.0.0.3") as customer_client:
        # A client cannot choose the address the guard sees: its own header is not believed.
        spoofed = {**bad, "X-Forwarded-For": "127.0.0.3"}
        statuses = [guesser.get(url, headers=spoofed).status_code for _ in range(5)]
        assert statuses[:3] == [401, 401, 401] and statuses[-1] == 429
        assert guesser.get(url, headers=customer.headers).status_code == 429  # blocked address
        assert customer_client.get(url, headers=customer.headers).status_code == 200


@POSTGRES_ONLY
def test_no_traffic_while_not_ready(stack, own_redis, customer):
    url = f"{stack.api}/v1/models"
    assert httpx.get(url, headers=customer.headers).status_code == 200
    own_redis.stop()
    # /readyz says 503 (Redis is down), so Traefik stops sending traffic: its own 503.
    assert eventually(lambda: httpx.get(f"{stack.api}/readyz").status_code == 503, timeout=15)
    assert eventually(
        lambda: httpx.get(url, headers=customer.headers).text.strip() == "no available server",
        timeout=15,
    )
    own_redis.start()
    assert eventually(lambda: httpx.get(url, headers=customer.headers).status_code == 200, 30)


@POSTGRES_ONLY
def test_sigterm_stops_everything_it_started(stack):
    assert stack.process is not None
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.api}/readyz", timeout=2)
