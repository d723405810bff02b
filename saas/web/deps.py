"""FastAPI dependencies every router shares: the request's database session, its context, its
principal, the actor that admin writes record, and the models the service runs.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, and thread hops per request cost ~15% of the event loop at 32 connections (py-spy).
"""

from collections.abc import AsyncIterator, Collection
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from saas.auth.principal import Actor, Principal
from saas.kit.changes import announced
from saas.kit.fields import IDEMPOTENCY_KEY_PATTERN
from saas.web.context import RequestContext, context_of
from saas.web.services import services_of


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Request-scoped session. Services only flush; this commits once, after the route returns
    and before its answer is sent (hence scope="function" in DbSession: FastAPI's default runs
    this after sending, so a client could read a 201 for a write that then failed). Then it
    publishes the changes the services announced to every worker. Database calls run in the
    thread pool, never on the event loop."""
    services = services_of(request)
    session = Session(services.database)
    try:
        yield session
        await run_in_threadpool(session.commit)
    finally:
        await run_in_threadpool(session.close)  # rolls back whatever was not committed
    for change in announced(session):
        await services.invalidator.publish(change)


DbSession = Annotated[Session, Depends(get_session, scope="function")]


async def get_context(request: Request) -> RequestContext:
    context = context_of(request.scope)
    assert context is not None, "RequestContextMiddleware runs before every route"
    return context


async def get_principal(request: Request) -> Principal:
    """The authenticated key (the auth middleware guards every /v1 and /admin route)."""
    principal = (await get_context(request)).principal
    assert principal is not None, "AuthMiddleware authenticates every /v1 and /admin route"
    return principal


async def get_actor(principal: Annotated[Principal, Depends(get_principal)]) -> Actor:
    return Actor.of(principal, via="api")


Context = Annotated[RequestContext, Depends(get_context)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
RequestActor = Annotated[Actor, Depends(get_actor)]


def known_models(request: Request) -> Collection[str]:
    """The public model names this deployment runs (SAAS_MODELS)."""
    return services_of(request).settings.models.keys()


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Send a retry with the same key and body within 24 h to get the first"
            " answer again (header `Idempotent-Replayed: true`), billed once. Another request"
            " under a used key: 422; the first still running: 409 with Retry-After.",
        ),
    ] = None,
) -> None:
    """Declares the header in OpenAPI; the admission step (saas/pipeline/admission.py) does the
    work."""
