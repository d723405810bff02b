"""create_app(): lifespan (database, Redis, models), middleware order, error handlers, routers."""

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI
from sqlalchemy import Engine as DatabaseEngine
from sqlmodel import Session

from saas import quickstart
from saas.accounts import routes as admin_routes
from saas.accounts import service as accounts_service
from saas.apidocs import routes as docs_routes
from saas.audit import routes as audit_routes
from saas.config import Settings, get_settings
from saas.dashboard import admin as dashboard_admin
from saas.dashboard import errors_page
from saas.dashboard import routes as dashboard_routes
from saas.keys import routes as key_routes
from saas.keys.authenticator import KeyAuthenticator
from saas.kit import metrics, redis_client
from saas.kit.changes import Change
from saas.kit.db import make_engine
from saas.kit.invalidation import Invalidator
from saas.kit.logging import configure_logging
from saas.kit.version import VERSION
from saas.nlp import routes as nlp_routes
from saas.nlp.policy import Policy
from saas.nlp.pool import InferencePool
from saas.pipeline.admission import AdmissionMiddleware
from saas.pipeline.auth import AuthMiddleware
from saas.pipeline.body_limit import BodyLimitMiddleware
from saas.pipeline.cors import add_cors
from saas.pipeline.idempotency import IdempotencyKeys
from saas.pipeline.request_context import MeteredRoutes, RequestContextMiddleware
from saas.problems.responses import install_error_handlers
from saas.ratelimit.admission import Admission
from saas.ratelimit.bruteforce import FailedAuthGuard, Guard
from saas.usage import partitions
from saas.usage import routes as usage_routes
from saas.usage.alerts import QuotaAlerts
from saas.usage.recorder import UsageRecorder
from saas.usage.service import month_billable_units
from saas.web import health, openapi
from saas.web.services import Services

log = structlog.get_logger(__name__)


def redis_pool_size(settings: Settings) -> int:
    """SAAS_REDIS_MAX_CONNECTIONS, else one per request the worker may have in flight (its
    SAAS_MAX_CONNECTIONS): each request holds at most one Redis connection at a time, so no
    request ever waits for another's connection. Connections open only as concurrency needs
    them (a fixed 16 made the 17th concurrent caller wait, and past the timeout, fail)."""
    return settings.redis_max_connections or settings.max_connections


def connect_redis(settings: Settings) -> redis_client.Client:
    """One Redis or a Redis Cluster (saas/kit/redis_client.py): a bounded number of connections,
    short timeouts and no retry after a timeout; a slow Redis must not hold requests (the
    limiter decides what happens instead)."""
    assert settings.redis_url
    return redis_client.connect(
        settings.redis_url,
        timeout=settings.redis_timeout,
        max_connections=redis_pool_size(settings),
    )


async def warn_about_plans(engine: DatabaseEngine, known_models: Collection[str]) -> None:
    """Log plans that name models this deployment does not run, and plans stored before a rule
    they break (best effort: a database that is down must not keep the server from starting;
    readiness reports it)."""

    def check() -> tuple[dict[str, list[str]], dict[str, str]]:
        with Session(engine) as session:
            return (
                accounts_service.plans_naming_unknown_models(session, known_models),
                accounts_service.plans_breaking_rules(session),
            )

    try:
        unknown, broken = await asyncio.to_thread(check)
        for plan, models in unknown.items():
            log.warning("plan_names_unknown_models", plan=plan, models=models)
        for plan, reason in broken.items():
            log.warning("plan_breaks_rules", plan=plan, reason=reason)
    except Exception as exc:  # noqa: BLE001
        log.error("plan_check_failed", error=type(exc).__name__)


async def make_ledger_partitions(engine: DatabaseEngine) -> None:
    """This month's ledger partition and the next ones (PostgreSQL), so a missed `saas maintain`
    never sends events to the default partition. Best effort, like warn_about_plans: inserts
    never fail for want of a partition anyway (the default partition takes them)."""
    try:
        today = datetime.now(UTC).date()
        report = await asyncio.to_thread(partitions.maintain, engine, today=today)
    except Exception as exc:  # noqa: BLE001
        log.error("ledger_partitions_failed", error=type(exc).__name__)
        return
    if report.created:
        log.info("ledger_partitions_created", partitions=report.created, moved=report.moved)
    if report.default_rows:
        log.warning("ledger_default_partition_not_empty", events=report.default_rows)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    db_engine = make_engine(settings.database_url)
    authenticator = KeyAuthenticator(
        db_engine,
        ttl=settings.key_cache_ttl,
        max_size=settings.key_cache_size,
        flush_seconds=settings.last_used_flush_seconds,
    )

    async def quota_used(account_id: int, month: str) -> int:
        return await asyncio.to_thread(month_billable_units, db_engine, account_id, month)

    admission = Admission(
        fail_open=settings.limiter_fail_open,
        redis_timeout=settings.redis_timeout,
        quota_used=quota_used,
    )

    def forget(change: Change) -> None:
        """What a committed change makes stale in this worker's caches."""
        if change.kind == "key":
            authenticator.forget(str(change.value))
        elif change.kind == "account":
            authenticator.clear()  # entries are keyed by key hash: drop them all (rare)
            admission.forget(int(change.value))
        else:  # a plan (all its accounts), or everything after a missed message
            authenticator.clear()
            admission.forget_all()

    invalidator = Invalidator(forget)
    alerts = QuotaAlerts(db_engine, allow_private=settings.webhook_allow_private)
    recorder = UsageRecorder(db_engine, on_committed=alerts.after_commit)
    guard = FailedAuthGuard(settings.auth_failures_per_ip)
    dashboard_writes = Guard(
        "dashboard_writes", settings.dashboard_writes_per_key, metrics.REDIS_ERRORS_DASHBOARD_WRITES
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inference = InferencePool(
            settings.models,
            long_text_chars=settings.engine_long_text_chars,
            long_max_queued_chars=settings.engine_long_max_queued_chars,
            max_batch=settings.engine_max_batch,
            max_wait=settings.engine_max_wait_ms / 1000,
            wait_fraction=settings.engine_wait_fraction,
            max_queue=settings.engine_max_queue,
            start_timeout=settings.engine_start_timeout,
        )
        redis = connect_redis(settings) if settings.redis_url else None
        app.state.services = Services(
            settings=settings,
            database=db_engine,
            invalidator=invalidator,
            redis=redis,
            inference=inference,
            authenticator=authenticator,
            failed_auth=guard,
            dashboard_writes=dashboard_writes,
            admission=admission,
            recorder=recorder,
            alerts=alerts,
        )
        if redis is not None and settings.redis_url:
            admission.use_redis(redis, settings.redis_prefix)
            for counted in (guard, dashboard_writes):
                counted.use_redis(settings.redis_url, settings.redis_prefix, settings.redis_timeout)
            invalidator.start(settings.redis_url, settings.redis_prefix)
        await admission.warm_up()
        await inference.start()
        authenticator.start()
        recorder.start()
        await alerts.resume()
        await warn_about_plans(db_engine, settings.models)
        await make_ledger_partitions(db_engine)
        # What starting built is kept for the worker's life: out of the collector's sight, a full
        # collection no longer walks it. Measured (bench.admission, c=32): p99 of an admitted
        # no-op request 15-17 ms instead of 77-87 ms, the same requests/s. Garbage first, so
        # none is kept; unfrozen at the end, so an app that stopped can be collected (tests run
        # many in one process).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await recorder.stop()  # commit what is queued before anything else closes
            await alerts.stop()
            await invalidator.stop()
            await authenticator.stop()
            await inference.stop()
            if redis is not None:
                await redis.aclose()
            db_engine.dispose()
            metrics.worker_exited(os.getpid())  # its queue depth no longer counts (multiprocess)

    app = FastAPI(
        title="spaCy API",
        version=VERSION,
        description=quickstart.description(
            "Named entities, tokens and dependency parses from spaCy, "
            "compatible with NLP Cloud's spaCy endpoints."
        ),
        # operationId = the route's name (`entities`, `my_usage`): what a client generated from
        # the schema names its functions, instead of FastAPI's `entities_v1__model__entities_post`.
        generate_unique_id_function=lambda route: route.name,
        lifespan=lifespan,
        root_path=settings.root_path,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: blank without internet.
        # saas/apidocs serves them from the package instead, at the same paths.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    openapi.install(app, settings.models)
    # Every router, in one list: MeteredRoutes takes the customer routes (/v1) from the same list
    # the app serves, so no customer route can be served without its Metering.
    routers = [
        health.router,
        docs_routes.router,
        errors_page.router,
        nlp_routes.router,
        usage_routes.customer_router,
        key_routes.customer_router,
        admin_routes.router,
        usage_routes.admin_router,
        key_routes.admin_router,
        audit_routes.router,
        dashboard_routes.router,
        dashboard_admin.router,
        dashboard_routes.fallback_router,  # last: it answers every other /dashboard/ path
    ]
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, [route for router in routers for route in router.routes])
    metered = MeteredRoutes(
        routers,
        [nlp_routes.METERING, key_routes.METERING, usage_routes.METERING],
        models=settings.models,
    )

    # Added innermost first. Request order: request context -> body limit -> authentication ->
    # admission and metering (the model policy, Idempotency-Key replays, rate limits and quota,
    # the usage event committed before the answer: saas/pipeline/admission.py) -> routes.
    app.add_middleware(
        AdmissionMiddleware,
        admission=admission,
        policy=Policy(settings.models, settings.default_model),
        admin_rate_limit=settings.admin_rate_limit,
        recorder=recorder if settings.usage_metering else None,
        idempotency=IdempotencyKeys(
            db_engine,
            lease=settings.idempotency_lease_seconds,
            wait=settings.idempotency_wait_seconds,
        ),
    )
    app.add_middleware(AuthMiddleware, authenticator=authenticator, guard=guard)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
    )
    # CORS, when configured: outside authentication (a preflight carries no key) and the body
    # limit (its 413 stays readable), inside the request context (answers keep a request id).
    add_cors(app, settings.cors_allow_origins)
    app.add_middleware(RequestContextMiddleware, metered=metered)
    return app
