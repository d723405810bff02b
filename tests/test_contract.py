"""Contract fuzzing: schemathesis generates requests from the app's own OpenAPI schema and
checks every answer against it with all its checks (no 5xx, every status documented, bodies,
content types and headers as declared, 405 with a right `Allow`...). Admin routes are called
with an admin key, the rest with a customer key whose plan is never the limit.

Each case goes to the app twice, in Uvicorn on loopback ports: on a SQLite file and on a
PostgreSQL schema with Redis, both its own (the admin routes' writes must not reach other tests'
accounts). SAAS_CONTRACT_EXAMPLES sets how many examples each operation gets (default 10)."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy import text
from sqlmodel import Session

from saas.accounts import service as accounts
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.app import create_app
from saas.config import Settings
from saas.keys import service as keys
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from saas.web.context import ADMIN_PREFIX
from tests.support.customers import TEST_ACTOR
from tests.support.nlp import ENGLISH_ONLY
from tests.support.servers import serve_in_thread
from tests.support.stores import REDIS_PREFIX, postgres_schema_url, postgres_url, redis_url

MAX_EXAMPLES = int(os.environ.get("SAAS_CONTRACT_EXAMPLES", "10"))
# Made by the fixture, so that collecting the test without running it leaves nothing behind.
DIRECTORY = Path(tempfile.gettempdir()) / f"saas-contract-{uuid.uuid4().hex[:12]}"
SETTINGS = Settings(
    database_url=f"sqlite:///{DIRECTORY / 'saas.kit.db'}",
    log_level="WARNING",
    auth_failures_per_ip="100000/minute",
    admin_rate_limit="100000/second",
    models=ENGLISH_ONLY,
    _env_file=None,
)
# Built at import, as schemathesis makes one test per operation when the tests are collected.
schema = schemathesis.openapi.from_dict(create_app(SETTINGS).openapi())

# Generated addresses may use special-use domains (`.test`, `.invalid`), which the API refuses
# for an account (email-validator's rule); JSON Schema's `format: email` cannot say so.
schemathesis.openapi.format(
    "email",
    st.from_regex(r"\A[a-z0-9]{1,20}([._+-][a-z0-9]{1,10})?@[a-z0-9]{1,20}\.(com|org|fr)\Z"),
)


# Checks skipped for one operation, each with the reason the schema cannot say better.
_LAX = (
    negative_data_rejection,
    "pydantic's lax mode reads \"5\" and 5.0 as 5 (the dashboard's forms rely on it)",
)
_RATE_LIMIT = (
    positive_data_acceptance,
    "rate_limit: the limits notation, no two windows of one length",
)
KNOWN_LOOSENESS: dict[str, list[tuple[CheckFunction, str]]] = {
    "POST /admin/plans": [_LAX, _RATE_LIMIT],
    "PATCH /admin/plans/{name}": [_LAX, _RATE_LIMIT],
    "POST /admin/keys/{key_id}/roll": [_LAX],
    "GET /admin/usage": [
        (positive_data_acceptance, "'from' after 'to' (default: today) is 422; no schema says so")
    ],
}


@dataclass
class Caller:
    key: str
    key_id: int
    account_id: int


@dataclass
class Backend:
    base_url: str
    callers: dict[str, Caller]  # "customer", "admin"
    # The fuzzer may revoke, roll and suspend whatever an id names, except the callers' own
    # keys and accounts: those ids become the bystander's.
    bystander: Caller


BACKENDS: list[Backend] = []


def _caller(session: Session, name: str, scopes: tuple[str, ...]) -> Caller:
    plan = accounts.create_plan(
        session=session,
        data=PlanCreate.model_validate(
            {"name": f"contract-{name}", "rate_limit": "100000/second", "monthly_quota": None}
        ),
        actor=TEST_ACTOR,
        known_models=SETTINGS.models,
    )
    account = accounts.create_account(
        session=session,
        data=AccountCreate(name=f"contract-{name}", email=f"{name}@example.com", plan=plan.name),
        actor=TEST_ACTOR,
    )
    assert account.id is not None
    key, plaintext = keys.create_key(
        session=session, account_id=account.id, actor=TEST_ACTOR, name=name, scopes=scopes
    )
    assert key.id is not None
    return Caller(plaintext, key.id, account.id)


@contextmanager
def _served(settings: Settings) -> Iterator[Backend]:
    """A migrated database with the callers, and the app on it in Uvicorn on a loopback port."""
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        callers = {
            "customer": _caller(session, "customer", ()),
            "admin": _caller(session, "admin", ("admin",)),
        }
        bystander = _caller(session, "bystander", ())
        session.commit()
    engine.dispose()
    with serve_in_thread(create_app(settings), log_level="warning") as port:
        yield Backend(f"http://127.0.0.1:{port}", callers, bystander)


@contextmanager
def _postgres_schema() -> Iterator[str]:
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module", autouse=True)
def servers() -> Iterator[None]:
    """The app twice: on its own SQLite file, and on PostgreSQL with Redis (as `make test` runs
    every test), each case sent to both."""
    with ExitStack() as stack:
        DIRECTORY.mkdir()
        stack.callback(shutil.rmtree, DIRECTORY, ignore_errors=True)
        postgres = SETTINGS.model_copy(
            update={
                "database_url": stack.enter_context(_postgres_schema()),
                "redis_url": redis_url(),
                "redis_prefix": f"{REDIS_PREFIX}-contract",
            }
        )
        BACKENDS[:] = [stack.enter_context(_served(s)) for s in (SETTINGS, postgres)]
        yield
    BACKENDS.clear()


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure in CI can be replayed
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_contract(case: schemathesis.Case[Any]) -> None:
    excluded = [check for check, why in KNOWN_LOOSENESS.get(case.operation.label, [])]
    role = "admin" if case.path.startswith(ADMIN_PREFIX) else "customer"
    for backend in BACKENDS:
        for name in ("key_id", "account_id"):
            own = {str(getattr(caller, name)) for caller in backend.callers.values()}
            if str(case.path_parameters.get(name)) in own:  # an int, or its text
                bystander = getattr(backend.bystander, name)
                case.path_parameters = {**case.path_parameters, name: bystander}
        if case.headers and "Idempotency-Key" in case.headers:
            # Each case is another request: a key the generator repeats would rightly be 422.
            headers = case.headers.copy()
            headers["Idempotency-Key"] = uuid.uuid4().hex
            case.headers = headers
        case.call_and_validate(
            base_url=backend.base_url,
            headers={"Authorization": f"Token {backend.callers[role].key}"},
            excluded_checks=excluded,
        )
