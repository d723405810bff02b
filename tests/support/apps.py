"""The app under test beyond the session's TestClient: an app of a test's own in this process,
and `saas serve` as operators run it."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from saas.app import create_app
from saas.config import Settings
from saas.web.services import Services
from tests.support.nlp import ENGLISH_ONLY
from tests.support.servers import free_port, start_process, stop_process
from tests.support.stores import redis_url

SAAS = str(Path(sys.executable).parent / "saas")  # the installed command


@contextmanager
def dedicated_client(settings: Settings, **overrides: object) -> Iterator[TestClient]:
    """An app of its own (own caches, limiter, inference process) on the session's database,
    for tests that must change a setting or break a service. English model only: it starts
    faster."""
    changed = settings.model_copy(update={"models": ENGLISH_ONLY, **overrides})
    with TestClient(create_app(changed)) as client:
        yield client


def services(client: TestClient) -> Services:
    """What the app `client` serves was built with (its admission, caches, inference pool),
    typed: TestClient types its app as any ASGI app."""
    built: Services = cast(FastAPI, client.app).state.services
    return built


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
        [SAAS, "serve", "--port", str(port), "--workers", "2"],
        {
            **os.environ,
            "SAAS_DATABASE_URL": backend,
            "SAAS_REDIS_URL": redis or redis_url(),
            "SAAS_REDIS_PREFIX": settings.redis_prefix,
            "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
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
