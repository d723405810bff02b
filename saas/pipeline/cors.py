"""CORS: closed unless SAAS_CORS_ALLOW_ORIGINS names origins, then Starlette's CORSMiddleware.

Closed by default because a browser page on another site should not drive the API with a key it
was handed. When a deployment opts in, the preflight is answered before authentication (a
browser never sends a key with it) and without credentials: keys travel in headers, and the
dashboard's session cookie must never be usable from another origin.
"""

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

ALLOWED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ALLOWED_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"]
# What a browser script may read from an answer: the rate-limit headers
# (saas/ratelimit/headers.py), Retry-After, the request id and the idempotent-replay flag.
EXPOSED_HEADERS = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
    "Retry-After",
    "X-Request-ID",
    "Idempotent-Replayed",
]


def add_cors(app: FastAPI, allow_origins: list[str]) -> None:
    """Add the middleware only when origins are configured: no origin, no CORS header at all."""
    if not allow_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allow_origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
