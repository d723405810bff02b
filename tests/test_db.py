"""The request session commits once, before the answer is sent, and the error handler tells a
lost uniqueness race (409) from a real bug (500)."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from saas.accounts.models import Plan
from saas.app import create_app
from saas.config import Settings
from saas.keys.models import ApiKey
from saas.kit.db import make_engine
from saas.problems.errors import is_unique_violation
from saas.web.deps import DbSession
from tests.support.marks import SQLITE_ONLY
from tests.support.problems import assert_problem


@SQLITE_ONLY
def test_a_commit_that_fails_is_never_answered_as_a_success(settings: Settings) -> None:
    """SQLite can defer its foreign-key checks to the commit. A route whose write only fails
    there must not have answered 201 already (FastAPI's default runs a dependency's exit after
    the answer is sent; DbSession runs it before)."""
    app = create_app(settings)

    @app.post("/probe-commit", status_code=201)
    def probe(session: DbSession) -> dict[str, str]:
        session.connection().exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        session.add(ApiKey(account_id=987654321, prefix="sk_live_x", key_hash="0" * 64))
        session.flush()  # passes: the foreign key is checked at commit
        return {"status": "written"}

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/probe-commit")
    assert_problem(response, "internal_error", "Internal server error.")
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(
                text("SELECT count(*) FROM api_keys WHERE key_hash = :h"), {"h": "0" * 64}
            ).scalar_one()
    finally:
        engine.dispose()
    assert count == 0


def test_unique_violations_are_told_from_other_constraints(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            session.add(Plan(name="dup-probe-plan"))
            session.commit()
        with Session(engine) as session, pytest.raises(IntegrityError) as duplicate:
            session.add(Plan(name="dup-probe-plan"))
            session.commit()
        with Session(engine) as session, pytest.raises(IntegrityError) as dangling:
            session.add(ApiKey(account_id=987654321, prefix="sk_live_y", key_hash="1" * 64))
            session.commit()
    finally:
        engine.dispose()
    assert is_unique_violation(duplicate.value)
    assert not is_unique_violation(dangling.value)
