"""What the hostile-client limits cost a normal request, side by side in one run.

    python -m bench.hostile_overhead [--seconds 1] [--rounds 15] [--connections 16]

One Uvicorn worker each, a no-op ASGI app that reads a small JSON body (with an Authorization
header, as customers send), driven by wrk with keep-alive, the servers taking turns round after
round (the machine is shared: only interleaved runs compare):
  (a) Uvicorn's own httptools protocol, bare app            (what ran before)
  (b) saas/server/protocol.py's protocol, bare app             (b/a: the header deadline,
                                                              connection cap and header count)
  (c) (b) with the app behind BodyLimitMiddleware            (c/b: the whole body-limit step,
                                                              deadline included)
And in-process, without a network: microseconds per request of the no-op app alone and behind
BodyLimitMiddleware (the whole step: size checks and the body deadline).
Prints median requests/s per server, the ratios and the in-process costs; saves
bench/results/hostile_overhead.json.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.harness import stop, wait_ready
from saas.pipeline.body_limit import BodyLimitMiddleware
from saas.server.protocol import GUARDED_HTTP

RESULTS = Path(__file__).parent / "results" / "hostile_overhead.json"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"text": "John Doe is a Go developer at Google in London."}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token sk_live_000000000000000000000000000000abcdef"
"""
OK = b'{"ok":true}'


async def noop(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": OK})


def make_app() -> ASGIApp:
    if os.environ.get("BENCH_BODY_LIMIT") == "1":
        return BodyLimitMiddleware(noop, max_body_bytes=1_000_000, body_timeout=30)
    return noop


SERVERS = {
    "a_stock_protocol": ("httptools", "0"),
    "b_guarded_protocol": (GUARDED_HTTP, "0"),
    "c_guarded_and_body_limit": (GUARDED_HTTP, "1"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(port: int, http: str, body_limit: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "uvicorn", "bench.hostile_overhead:make_app", "--factory"]
    args += ["--port", str(port), "--http", http, "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "BENCH_BODY_LIMIT": body_limit}
    return subprocess.Popen(args, env=env, start_new_session=True)


def wrk(url: str, seconds: int, connections: int, script: Path) -> float:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    line = next(line for line in out.splitlines() if line.startswith("Requests/sec:"))
    return float(line.split()[1])


async def in_process(rounds: int, requests: int = 20_000) -> dict[str, float]:
    """Median microseconds per request of the no-op app, bare and behind the middleware."""
    scope: Scope = {
        "type": "http",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"58")],
    }
    message: Message = {"type": "http.request", "body": b"x" * 58, "more_body": False}

    async def receive() -> Message:
        await asyncio.sleep(0)  # Uvicorn's receive() awaits an event
        return message

    async def send(_: Message) -> None:
        pass

    apps: dict[str, ASGIApp] = {
        "bare": noop,
        "body_limit": BodyLimitMiddleware(noop, max_body_bytes=10**6, body_timeout=30),
    }
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            started = time.perf_counter()
            for _ in range(requests):
                await app(scope, receive, send)
            times[name].append((time.perf_counter() - started) / requests * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args()
    ports = {name: free_port() for name in SERVERS}
    processes = {name: start(ports[name], *SERVERS[name]) for name in SERVERS}
    rates: dict[str, list[float]] = {name: [] for name in SERVERS}
    try:
        for name, port in ports.items():
            wait_ready(port, processes[name], path="/")
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(WRK_SCRIPT)
            for port in ports.values():  # warm-up, unmeasured
                wrk(f"http://127.0.0.1:{port}/", 1, options.connections, script)
            names = list(ports)
            for round_ in range(options.rounds):
                # Each round starts with the next server: no server always runs first.
                for name in names[round_ % 3 :] + names[: round_ % 3]:
                    port = ports[name]
                    url = f"http://127.0.0.1:{port}/"
                    rates[name].append(wrk(url, options.seconds, options.connections, script))
    finally:
        for process in processes.values():
            stop(process)
    median = {name: statistics.median(values) for name, values in rates.items()}

    def paired(top: str, bottom: str) -> float:
        # The median of each round's ratio: the load of the shared machine drifts between
        # rounds, far less within one.
        return statistics.median(t / b for t, b in zip(rates[top], rates[bottom], strict=True))

    result = {
        "requests_per_second": rates,
        "median": median,
        "b_over_a": paired("b_guarded_protocol", "a_stock_protocol"),
        "c_over_b": paired("c_guarded_and_body_limit", "b_guarded_protocol"),
        "c_over_a": paired("c_guarded_and_body_limit", "a_stock_protocol"),
        "options": vars(options),
    }
    in_process_us = uvloop.run(in_process(options.rounds))  # Uvicorn's loop
    result["in_process_us_per_request"] = in_process_us
    for name, value in median.items():
        print(f"{name:28} {value:8.0f} req/s (median of {options.rounds})")
    for ratio in ("b_over_a", "c_over_b", "c_over_a"):
        print(f"{ratio:28} {result[ratio]:8.3f} (median of the rounds' ratios)")
    for name, value in in_process_us.items():
        print(f"in-process {name:17} {value:8.2f} us/request")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
