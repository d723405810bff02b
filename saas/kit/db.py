"""Database engine and sessions. Sync SQLAlchemy: admin routes run in FastAPI's thread pool and the
request path only touches the database on a key-cache miss (in a worker thread), so an async
driver would buy nothing but a second driver for Alembic and the CLI."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, create_engine

from saas.kit.changes import Change, announced


def normalize_database_url(url: str) -> str:
    """Accept plain `postgresql://` / `postgres://` URLs and pick the psycopg 3 driver for them."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,  # errors would otherwise quote key hashes and webhook secrets
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the server read while the CLI writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A short connect timeout: a request waiting on an unreachable database should fail fast.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args={"connect_timeout": 3},
        hide_parameters=True,  # errors would otherwise quote key hashes and webhook secrets
    )


@contextmanager
def transaction(engine: Engine) -> Iterator[tuple[Session, list[Change]]]:
    """A session outside a request (CLI, start-up defaults): commits once at the end and fills
    the list with the changes its services announced, for the caller to publish."""
    changes: list[Change] = []
    with Session(engine) as session:
        yield session, changes
        session.commit()
        changes.extend(announced(session))


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model, for bulk statements (upserts, executemany)."""
    return SQLModel.metadata.tables[str(model.__tablename__)]


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """In UTC, as everything is stored: an aware time is converted, a naive one (SQLite hands
    those back; an operator may type one) is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """INSERT with ON CONFLICT for the dialect named (`engine.dialect.name`): both databases
    speak it, each through its own construct."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
