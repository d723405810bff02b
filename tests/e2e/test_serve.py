"""The service as operators run it: `saas bootstrap` then `saas serve`, in a subprocess."""

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.apps import SAAS, wait_until_ready
from tests.support.polling import eventually
from tests.support.servers import free_port, start_process, stop_process

DONE_WHEN = "John Doe is a Go developer at Google in London."


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    found = {int(p) for p in out.split()}
    for child in list(found):
        found |= children_of(child)
    return found


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(request, tmp_path):
    env = {**os.environ, "SAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'saas.kit.db'}"}
    env.pop("SAAS_REDIS_URL", None)
    boot = subprocess.run([SAAS, "bootstrap"], env=env, capture_output=True, text=True, check=True)
    # The admin account's plan ("internal") allows 1000 requests a second; demo's allows 5.
    keys = {line.split()[0]: line.split()[-1] for line in boot.stdout.splitlines()}
    port = free_port()
    process = start_process(
        [SAAS, "serve", "--port", str(port), "--workers", str(request.param)], env
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, process)
    yield base, keys, process
    stop_process(process)


def test_done_when_curl(server):
    base, keys, _ = server
    key = keys["demo"]
    output = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{base}/v1/en_core_web_sm/entities",
            "-H",
            f"Authorization: Token {key}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"text": DONE_WHEN}),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(output) == {
        "entities": [
            {"start": 0, "end": 8, "type": "PERSON", "text": "John Doe"},
            {"start": 30, "end": 36, "type": "ORG", "text": "Google"},
            {"start": 40, "end": 46, "type": "GPE", "text": "London"},
        ]
    }


def test_concurrent_clients_and_clean_shutdown(server):
    base, keys, process = server
    key = keys["admin"]
    descendants = children_of(process.pid)
    assert descendants  # at least the inference process
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
        from concurrent.futures import ThreadPoolExecutor

        texts = [f"Angela Merkel met Emmanuel Macron in Berlin on day {i}." for i in range(64)]
        with ThreadPoolExecutor(16) as pool:
            responses = list(
                pool.map(
                    lambda t: http.post("/v1/en_core_web_sm/entities", json={"text": t}), texts
                )
            )
    assert [r.status_code for r in responses] == [200] * 64
    assert all("Berlin" in r.text for r in responses)

    process.send_signal(signal.SIGTERM)
    # Uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert eventually(lambda: not any(is_alive(pid) for pid in descendants), 10, 0.1), (
        "orphaned processes after shutdown",
        [pid for pid in descendants if is_alive(pid)],
    )
