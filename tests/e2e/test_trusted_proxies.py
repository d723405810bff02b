"""Whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed: the addresses in
SAAS_FORWARDED_ALLOW_IPS only, under `saas serve` and Gunicorn alike (one function builds
Uvicorn's options for both: saas/server/protocol.py). Here the trusted proxy is 127.0.0.2 and the
other client 127.0.0.1 (both loopback: a client socket bound to either reaches the server).
`saas serve` ignored the setting until the security review: any local process chose the address
the failed-key guard counts, and the scheme that marks the dashboard's cookie Secure."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from saas.auth import key_format
from tests.support.apps import wait_until_ready
from tests.support.nlp import ENGLISH_ONLY
from tests.support.servers import free_port, start_process, stop_process

BIN = Path(sys.executable).parent
CONFIG = str(Path(__file__).resolve().parents[2] / "ops" / "gunicorn.conf.py")
PROXY, OTHER = "127.0.0.2", "127.0.0.1"
FAILURES = 5  # bad keys an address may present a minute


@pytest.fixture(params=["saas serve", "gunicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The server, on its own SQLite database and in-process limiter, and the demo key."""
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'saas.kit.db'}",
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
        "SAAS_FORWARDED_ALLOW_IPS": PROXY,
        "SAAS_AUTH_FAILURES_PER_IP": f"{FAILURES}/minute",
        "SAAS_SHARE_MODELS": "false",
    }
    env.pop("SAAS_REDIS_URL", None)
    boot = subprocess.run(
        [str(BIN / "saas"), "bootstrap"], env=env, capture_output=True, text=True, check=True
    )
    demo = next(line.split()[-1] for line in boot.stdout.splitlines() if line.startswith("demo"))
    port = free_port()
    if request.param == "gunicorn":
        env |= {"SAAS_BIND": f"127.0.0.1:{port}", "SAAS_WORKERS": "1"}
        command = [str(BIN / "gunicorn"), "--config", CONFIG]
    else:
        command = [str(BIN / "saas"), "serve", "--port", str(port)]
    process = start_process(command, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield base, demo
    finally:
        stop_process(process)


def client_from(address: str, base: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base, transport=transport, timeout=30)


def test_forwarded_headers_are_believed_from_the_trusted_proxy_only(
    server: tuple[str, str],
) -> None:
    base, demo = server
    with client_from(PROXY, base) as proxy, client_from(OTHER, base) as other:
        # The dashboard's cookie is Secure when the proxy says the request came over HTTPS,
        # and only then.
        https = {"X-Forwarded-Proto": "https"}
        signed = proxy.post("/dashboard", data={"api_key": demo}, headers=https)
        assert signed.status_code == 303, signed.text
        assert "secure" in signed.headers["set-cookie"].lower()
        faked = other.post("/dashboard", data={"api_key": demo}, headers=https)
        assert faked.status_code == 303, faked.text
        assert "secure" not in faked.headers["set-cookie"].lower()

        # Through the proxy, each bad key is counted against the address it forwards: no
        # client is blocked for another's failures.
        def bad_key(client: httpx.Client, n: int) -> int:
            headers = {"X-API-Key": key_format.generate_key(), "X-Forwarded-For": f"198.51.100.{n}"}
            return client.get("/v1/models", headers=headers).status_code

        assert [bad_key(proxy, n) for n in range(FAILURES + 3)] == [401] * (FAILURES + 3)
        # From anyone else the header is ignored: its failures are its own, whatever it claims.
        assert [bad_key(other, n) for n in range(FAILURES + 1)] == [401] * FAILURES + [429]
