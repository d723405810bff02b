"""Migrations are the only way tables are made: they run on both databases, match the models,
and go down and up again cleanly."""

import json
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import saas.models  # noqa: F401 - registers the tables
from alembic import command
from saas.kit.db import make_engine
from saas.kit.migrations import alembic_config, include_name, upgrade
from tests.support.stores import postgres_schema_url, postgres_url

TABLES = {"plans", "accounts", "api_keys", "alembic_version"}


def test_migrated_schema_matches_the_models(backend):
    engine = make_engine(backend)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) >= TABLES
            context = MigrationContext.configure(connection, opts={"include_name": include_name})
            diff = compare_metadata(context, SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
        return
    schema = f"roundtrip_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield postgres_schema_url(schema)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_downgrade_and_upgrade_again(empty_database):
    url = empty_database
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) >= TABLES
    engine.dispose()


def test_plans_made_before_0004_get_the_default_max_batch_texts(empty_database):
    url = empty_database
    upgrade(url, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO plans (name, rate_limit, max_text_chars, price_cents_per_month,"
                    " price_cents_per_1000_requests, created_at, max_keys)"
                    " VALUES ('old', '60/minute', 1000, 0, 0, CURRENT_TIMESTAMP, 10)"
                )
            )
        upgrade(url, "0004")
        with engine.connect() as connection:
            value: int = connection.execute(
                text("SELECT max_batch_texts FROM plans WHERE name = 'old'")
            ).scalar_one()
        assert value == 32
        command.downgrade(alembic_config(url), "0003")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("plans")}
        assert "max_batch_texts" not in columns and "max_keys" in columns
    finally:
        engine.dispose()


def test_entries_before_0005_keep_their_actor(empty_database):
    """Before 0005 only the CLI wrote entries without an acting key; they become via 'cli'."""
    url = empty_database
    upgrade(url, "0004")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for actor in ("7", "NULL"):
                connection.execute(
                    text(
                        "INSERT INTO audit_log (at, actor_key_id, action, object_type, object_id,"
                        f" changes) VALUES (CURRENT_TIMESTAMP, {actor}, 'key.revoke', 'key', '1',"
                        " '{}')"
                    )
                )
        upgrade(url, "0005")
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT actor_key_id, via FROM audit_log ORDER BY id")
            ).all()
            key_columns = {c["name"] for c in inspect(connection).get_columns("api_keys")}
        assert [tuple(row) for row in rows] == [(7, "api"), (None, "cli")]
        assert "rolled_at" in key_columns
    finally:
        engine.dispose()


def test_plans_for_all_models_made_before_0005_mean_all(empty_database):
    """`saas plans create --models all` used to store a plan whose only model was "all"."""
    url = empty_database
    upgrade(url, "0004")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for name, models in (("everything", '["all"]'), ("english", '["en_core_web_sm"]')):
                connection.execute(
                    text(
                        "INSERT INTO plans (name, rate_limit, max_text_chars,"
                        " price_cents_per_month, price_cents_per_1000_requests, created_at,"
                        f" max_keys, max_batch_texts, models) VALUES ('{name}', '60/minute',"
                        f" 1000, 0, 0, CURRENT_TIMESTAMP, 10, 32, '{models}')"
                    )
                )
        upgrade(url, "0005")
        with engine.connect() as connection:
            rows: dict[str, Any] = dict(
                connection.execute(text("SELECT name, models FROM plans")).all()
            )
        english = (
            rows["english"] if isinstance(rows["english"], list) else json.loads(rows["english"])
        )
        assert rows["everything"] is None and english == ["en_core_web_sm"]
    finally:
        engine.dispose()
