"""What the benchmarks share: request bodies, a PostgreSQL schema of their own, starting `saas
serve` on it, and driving a server with wrk.

wrk (C, one thread, epoll) is the load generator: one thread answers more than 6,000 requests/s
on this project's no-op route (bench.admission), twenty times what spaCy serves, so it is never
the bottleneck here. Its Lua script rotates the bodies and reports latency percentiles as JSON.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

SAAS = str(Path(sys.executable).parent / "saas")
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"

WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"}
local key = os.getenv("BENCH_KEY")
if key ~= "" then headers["Authorization"] = "Token " .. key end
-- BENCH_UNIQUE=1 appends a word seen nowhere before to every text, so each request brings new
-- strings to the model's vocabulary (the memory benchmark).
local unique = os.getenv("BENCH_UNIQUE") == "1"
local i = 0
local n = 0
setup = function(thread) thread:set("offset", math.random(#bodies)) end
init = function() i = offset or 0 end
request = function()
  i = i % #bodies + 1
  local body = bodies[i]
  if unique then
    n = n + 1
    body = string.sub(body, 1, -3) .. " Zq" .. n .. "x" .. math.random(1000000) .. '"}'
  end
  return wrk.format("POST", nil, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def write_bodies(path: Path, bodies: list[dict]) -> Path:
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies), encoding="utf-8")
    return path


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL on a schema of its own, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to a postgres_schema() URL (its schema first on the search
    path, from the URL's options), in UTC: days and hours as the ledger counts them."""
    connection = psycopg.connect(url, autocommit=True)
    connection.execute("SET TIME ZONE 'UTC'")
    return connection


# The hourly rollups of whatever usage_events holds, as the ledger keeps them (saas/usage/
# ledger.py), for benchmarks that fill the raw table directly.
ROLL_UP = """
    INSERT INTO usage_rollups (account_id, day, hour, endpoint, status, requests, units,
        billable_units, chars)
    SELECT account_id, occurred_at::date, extract(hour FROM occurred_at)::int, endpoint, status,
        count(*), sum(units), sum(CASE WHEN billable THEN units ELSE 0 END), sum(chars)
    FROM usage_events GROUP BY 1, 2, 3, 4, 5
"""


def saas(env: dict[str, str], *args: str) -> str:
    return subprocess.run([SAAS, *args], env=env, capture_output=True, text=True, check=True).stdout


def bench_key(env: dict[str, str]) -> str:
    """Bootstrap the database and return a key of an account on a plan that meters, counts the
    quota and applies rate limits, set high enough never to refuse the benchmark."""
    saas(env, "bootstrap")
    plans = json.loads(saas(env, "plans", "list", "--json"))
    if not any(plan["name"] == "bench" for plan in plans):
        saas(env, "plans", "create", "bench", "--rate-limit", "100000/second;10000000/hour",
             "--monthly-quota", "1000000000")  # fmt: skip
        saas(env, "accounts", "create", "bench", "--email", "bench@example.com", "--plan", "bench")
    return saas(env, "keys", "create", "bench", "--name", "bench").strip().splitlines()[-1]


def wait_ready(
    port: int, server: subprocess.Popen[bytes], timeout: float = 180.0, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(server)
    raise SystemExit("server did not become ready")


def start(
    args: list[str],
    port: int,
    env: dict[str, str],
    ready_path: str = "/readyz",
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own (so its workers and inference processes stop
    with it) and wait until its readiness path answers 200. `cwd`: where it runs (`python -m`
    and `-c` import from there first)."""
    server = subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_ready(port, server, path=ready_path)
    return server


def serve(env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    return start([SAAS, "serve", "--port", str(port), "--workers", str(workers)], port, env)


@dataclass(frozen=True)
class EntitiesService:
    server: subprocess.Popen[bytes]
    url: str  # POST /v1/{model}/entities
    bodies: Path  # one request body a line, for wrk
    key: str
    workdir: Path  # a temporary directory for the caller's files, removed afterwards


@contextlib.contextmanager
def entities_service(port: int, redis_prefix: str, texts: int = 2000) -> Iterator[EntitiesService]:
    """`saas serve` with one worker on a PostgreSQL schema of its own and Redis, keys, limits,
    quota and metering on (a plan that never refuses), and `texts` of bench/corpus.py as entities
    bodies; stopped afterwards."""
    from bench.corpus import load_texts  # its corpus packages are the bench extra's

    chosen = load_texts(texts)
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as database_url:
        workdir = Path(tmp)
        bodies = write_bodies(workdir / "entities.jsonl", [{"text": t} for t in chosen])
        env = {**os.environ, "SAAS_DATABASE_URL": database_url, "SAAS_REDIS_URL": REDIS,
               "SAAS_REDIS_PREFIX": redis_prefix, "SAAS_LOG_JSON": "true"}  # fmt: skip
        key = bench_key(env)
        server = serve(env, port)
        try:
            url = f"http://127.0.0.1:{port}/v1/en_core_web_sm/entities"
            yield EntitiesService(server, url, bodies, key, workdir)
        finally:
            stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def wrk(
    url: str,
    bodies: Path,
    *,
    key: str = "",
    connections: int,
    seconds: int,
    warmup: int = 3,
    unique: bool = False,
) -> dict:
    """Requests/s, latency percentiles and errors of one wrk run (after an unmeasured warm-up)."""
    script = bodies.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_KEY": key,
        "BENCH_UNIQUE": "1" if unique else "0",
    }
    threads = "-t1"
    run = ["wrk", threads, f"-c{connections}", "--timeout", "30s", "-s", str(script)]
    if warmup:
        warm = [*run, f"-d{round(warmup)}s", url]
        subprocess.run(warm, env=env, capture_output=True, check=True)
    measure = [*run, f"-d{round(seconds)}s", url]
    out = subprocess.run(measure, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))
    result["rps"] = round(result["requests"] / result["seconds"], 1)
    result["connections"] = connections
    return result
