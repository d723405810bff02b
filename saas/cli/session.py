"""What every CLI command shares: a database transaction that tells the running workers what
changed once it commits, the actor its writes are audited as, and error reporting."""

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session

from saas.auth.principal import Actor
from saas.config import get_settings
from saas.kit.changes import Change
from saas.kit.db import make_engine, transaction
from saas.problems.errors import CONFLICTING_WRITE, AppError, describe_errors, is_unique_violation

Model = TypeVar("Model", bound=BaseModel)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def fail_database(exc: DBAPIError) -> NoReturn:
    """The driver's own first line: SQLAlchemy's text would quote the statement, hide_parameters
    or not."""
    reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "no reason"
    fail(f"database error: {reason}")


def cli_actor() -> Actor:
    """Audit entries made here name the operating-system user who ran the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return Actor(via="cli", name=user)


def known_models() -> list[str]:
    return list(get_settings().models)


def build(model: type[Model], **fields: object) -> Model:
    """Validate options as the admin API validates a body; a clear error instead of a trace."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        fail(describe_errors(exc.errors()))


@contextmanager
def db_session() -> Iterator[Session]:
    """One transaction; a domain error ends the command with its message and exit code 1.
    After the commit, running workers are told what changed."""
    engine = make_engine(get_settings().database_url)
    changes: list[Change] = []
    try:
        with transaction(engine) as (session, announced):
            yield session
        changes = announced
    except AppError as exc:
        fail(exc.detail)
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        fail(CONFLICTING_WRITE)
    except OperationalError as exc:  # unreachable, locked, or not migrated (then `saas migrate`)
        fail_database(exc)
    finally:
        engine.dispose()
    if changes:
        tell_workers(changes)


def tell_workers(changes: list[Change]) -> None:
    settings = get_settings()
    if not settings.redis_url:
        typer.echo(
            "note: no SAAS_REDIS_URL; a running server applies this within "
            "SAAS_KEY_CACHE_TTL seconds",
            err=True,
        )
        return
    # Imported here: every other command starts without loading the Redis client.
    from saas.kit.invalidation import publish_sync

    try:
        publish_sync(settings.redis_url, settings.redis_prefix, changes)
    except Exception as exc:  # noqa: BLE001 - the change is committed; only the broadcast failed
        typer.echo(
            f"warning: workers not notified ({type(exc).__name__}); "
            "they apply it within SAAS_KEY_CACHE_TTL seconds",
            err=True,
        )
