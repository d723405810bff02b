"""Alembic environment: the database comes from Settings (or from the caller's connection)."""

from sqlmodel import SQLModel

import saas.models  # noqa: F401 - registers every table on SQLModel.metadata
from alembic import context
from saas.config import get_settings
from saas.kit.db import make_engine
from saas.kit.migrations import include_name

target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        compare_type=True,
        include_name=include_name,  # not the ledger's month partitions (see there)
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.config.attributes.get("database_url") or get_settings().database_url
    engine = make_engine(url)
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()
