"""Liveness and readiness for load balancers and Kubernetes probes, and Prometheus metrics
(no authentication: the public proxy routes only /api, so none of them is reachable from outside).
"""

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import Engine, text
from starlette.responses import JSONResponse, Response

from saas.kit import metrics, redis_client
from saas.web.services import services_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]  # "ok", "loading" or "error: <exception type>", by dependency


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down or loading"}},
)
async def readyz(request: Request) -> JSONResponse:
    services = services_of(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping_database, services.database), 2.0)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"error: {type(exc).__name__}"
    if services.redis is not None:
        try:
            await asyncio.wait_for(redis_client.ping(services.redis), 1.0)
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
    checks["models"] = "ok" if services.inference.ready else "loading"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    # A plain function, so FastAPI runs it in its thread pool: in multiprocess mode it reads
    # every worker's files.
    body, content_type = metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
