"""What a worker builds once and every request may use, in one typed holder: made by the app's
lifespan (saas/app.py), read through the `CurrentServices` dependency (or `services_of` outside
FastAPI's injection), never through loose `app.state` attributes.

The web layer sits below the domains, so the domain types are imported for the type checker
only (the import-linter contract ignores exactly these imports): at run time this module imports
no domain, and the domains' routes can depend on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from saas.config import Settings
from saas.kit import redis_client
from saas.kit.invalidation import Invalidator

if TYPE_CHECKING:
    from saas.keys.authenticator import KeyAuthenticator
    from saas.nlp.pool import InferencePool
    from saas.ratelimit.admission import Admission
    from saas.ratelimit.bruteforce import FailedAuthGuard, Guard
    from saas.usage.alerts import QuotaAlerts
    from saas.usage.recorder import UsageRecorder


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Engine
    invalidator: Invalidator
    redis: redis_client.Client | None  # None: the embedded default (SQLite, limits in memory)
    inference: InferencePool  # the spaCy inference processes of this worker
    authenticator: KeyAuthenticator  # key lookups behind their cache
    failed_auth: FailedAuthGuard  # addresses that sent too many bad keys or sessions
    dashboard_writes: Guard  # dashboard changes per key
    admission: Admission
    recorder: UsageRecorder
    alerts: QuotaAlerts


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# `async def` although it never awaits: FastAPI runs a plain `def` dependency in its thread pool.
async def get_services(request: Request) -> Services:
    return services_of(request)


CurrentServices = Annotated[Services, Depends(get_services)]
