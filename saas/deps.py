"""FastAPI dependencies every router shares: the request's context, its principal, the actor
that admin writes record, and the models the service runs.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, and thread hops per request cost ~15% of the event loop at 32 connections (py-spy).
"""

from collections.abc import Collection
from typing import Annotated

from fastapi import Depends, Request

from saas.context import RequestContext, context_of
from saas.principal import Actor, Principal


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
    models: dict[str, str] = request.app.state.settings.models
    return models.keys()
