"""The peer for bench.admission: a no-op FastAPI route behind slowapi, the rate-limit extension
people add to FastAPI, with Redis storage (through `limits`) and a per-key dynamic limit.

    uvicorn bench.slowapi_app:make_app --factory

Configured by environment (bench.admission sets it): BENCH_SLOWAPI_REDIS (storage URL),
BENCH_SLOWAPI_PREFIX (a key prefix of its own on the shared Redis), BENCH_SLOWAPI_STRATEGY
(`limits` strategy, default slowapi's own: fixed-window) and BENCH_SLOWAPI_KEYS (a JSON object
of API key -> limit string, the plans a real app would look up). slowapi authenticates nothing:
a key missing from the dict gets DEFAULT_LIMIT, which favours slowapi against a service that
verifies every key.
"""

import json
import os

from fastapi import FastAPI, Request
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

DEFAULT_LIMIT = "10/minute"


def api_key(request: Request) -> str:
    """slowapi's key_func: the key from `Authorization: Token <key>`, as this service reads it."""
    return request.headers.get("authorization", "").removeprefix("Token ").strip()


def make_app() -> FastAPI:
    plan_limits: dict[str, str] = json.loads(os.environ.get("BENCH_SLOWAPI_KEYS", "{}"))

    def plan_limit(key: str) -> str:
        # slowapi passes the key_func's value to a provider with a `key` parameter.
        return plan_limits.get(key, DEFAULT_LIMIT)

    limiter = Limiter(
        key_func=api_key,
        storage_uri=os.environ.get("BENCH_SLOWAPI_REDIS", "redis://127.0.0.1:6379/0"),
        strategy=os.environ.get("BENCH_SLOWAPI_STRATEGY", "fixed-window"),
        key_prefix=os.environ.get("BENCH_SLOWAPI_PREFIX", "bench-slowapi"),
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    # The same route without slowapi: what FastAPI alone costs, for scale.
    @app.get("/noop")
    async def bare_noop() -> dict[str, bool]:
        return {"ok": True}

    # slowapi's decorator needs the `request` parameter to find the key.
    @app.get("/v1/noop")
    @limiter.limit(plan_limit)
    async def noop(request: Request) -> dict[str, bool]:
        return {"ok": True}

    return app
