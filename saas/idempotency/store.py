"""Claims and stored answers of Idempotency-Keys (saas/idempotency/models.py).

A request with a key first claims it (one INSERT .. ON CONFLICT DO NOTHING: one winner across
workers and hosts); its 2xx answer is then written by the usage ledger in the transaction that
commits its usage event (`save_answers`), so "billed" and "answer kept" are one fact. A claim
whose request ended without a stored answer is released; one left by a killed worker expires
with its lease. Expired rows are ignored on read and deleted by `saas maintain`."""

import functools
import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, select, update

from saas.idempotency.models import IdempotencyRecord
from saas.kit.db import as_utc, dialect_insert, table_of
from saas.kit.fields import IDEMPOTENCY_KEY_PATTERN

RECORDS: Table = table_of(IdempotencyRecord)
KEEP_ANSWERS = timedelta(hours=24)
_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def valid_key(key: str) -> bool:
    """The rule of saas/kit/fields.py, which the OpenAPI schema states too."""
    return _VALID_KEY.fullmatch(key) is not None


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests "the same": endpoint, model (in the path) and exact body bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer to replay: status, content type and body (uncompressed)."""

    status: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class Found:
    """The record another request made for the key: its answer, or a running claim's lease."""

    fingerprint: str
    answer: Answer | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Completion:
    """A 2xx answer to store with its usage event, for the claim `request_id` holds."""

    account_id: int
    key: str
    request_id: str
    answer: Answer
    expires_at: datetime


@functools.cache
def _claim_statement(dialect: str) -> Any:
    """Insert a claim, or take over an expired row of the same key, in one statement (both
    databases speak ON CONFLICT .. DO UPDATE .. WHERE); returns a row only when it claimed."""
    insert = dialect_insert(dialect)
    statement = insert(RECORDS)
    fresh = ("fingerprint", "request_id", "status", "content_type", "body", "created_at")
    return statement.on_conflict_do_update(
        index_elements=["account_id", "key"],
        set_={name: statement.excluded[name] for name in (*fresh, "expires_at")},
        where=RECORDS.c.expires_at <= statement.excluded.created_at,
    ).returning(RECORDS.c.request_id)


def claim(
    engine: Engine,
    *,
    account_id: int,
    key: str,
    fingerprint: str,
    request_id: str,
    now: datetime,
    lease: timedelta,
) -> Found | None:
    """None when `request_id` now holds the key; else what holds it (an expired row counts as
    absent: it is taken over)."""
    this = (RECORDS.c.account_id == account_id) & (RECORDS.c.key == key)
    row = {
        "account_id": account_id,
        "key": key,
        "fingerprint": fingerprint,
        "request_id": request_id,
        "status": None,
        "content_type": None,
        "body": None,
        "created_at": now,
        "expires_at": now + lease,
    }
    with engine.begin() as connection:
        if connection.execute(_claim_statement(engine.dialect.name), row).first() is not None:
            return None
        held = connection.execute(
            select(
                RECORDS.c.fingerprint,
                RECORDS.c.status,
                RECORDS.c.content_type,
                RECORDS.c.body,
                RECORDS.c.expires_at,
            ).where(this)
        ).first()
    if held is None:  # released between the insert and the read: the caller tries again
        return Found(fingerprint, None, now)
    answer = None
    if held.status is not None:
        answer = Answer(held.status, held.content_type, zlib.decompress(held.body or b""))
    return Found(held.fingerprint, answer, as_utc(held.expires_at))


def release(engine: Engine, *, account_id: int, key: str, request_id: str) -> None:
    """Drop the claim of a request that ended without a stored answer (an error is not kept:
    a retry runs again). Never touches a stored answer or another request's claim."""
    with engine.begin() as connection:
        connection.execute(
            delete(RECORDS).where(
                RECORDS.c.account_id == account_id,
                RECORDS.c.key == key,
                RECORDS.c.request_id == request_id,
                RECORDS.c.status.is_(None),
            )
        )


def renew(engine: Engine, *, account_id: int, key: str, request_id: str, until: datetime) -> bool:
    """Extend the claim `request_id` holds while its request runs, so that a request longer
    than the lease is never taken over (and run and billed twice); False if it is not held."""
    with engine.begin() as connection:
        renewed = connection.execute(
            update(RECORDS)
            .where(
                RECORDS.c.account_id == account_id,
                RECORDS.c.key == key,
                RECORDS.c.request_id == request_id,
                RECORDS.c.status.is_(None),
            )
            .values(expires_at=until)
        )
    return renewed.rowcount == 1


_SAVE = (
    update(RECORDS)
    .where(
        RECORDS.c.account_id == bindparam("b_account_id"),
        RECORDS.c.key == bindparam("b_key"),
        RECORDS.c.request_id == bindparam("b_request_id"),
    )
    .values(
        status=bindparam("b_status"),
        content_type=bindparam("b_content_type"),
        body=bindparam("b_body"),
        expires_at=bindparam("b_expires_at"),
    )
)


def save_answers(connection: Connection, completions: Sequence[Completion]) -> None:
    """Store answers in the caller's transaction (the usage ledger's). Bodies are zlib
    compressed: NLP answers are repetitive JSON, a few times smaller."""
    connection.execute(
        _SAVE,
        [
            {
                "b_account_id": done.account_id,
                "b_key": done.key,
                "b_request_id": done.request_id,
                "b_status": done.answer.status,
                "b_content_type": done.answer.content_type,
                "b_body": zlib.compress(done.answer.body),
                "b_expires_at": done.expires_at,
            }
            for done in completions
        ],
    )


def delete_expired(engine: Engine, *, now: datetime) -> int:
    """Delete expired answers and claims (`saas maintain`); returns how many."""
    with engine.begin() as connection:
        return connection.execute(delete(RECORDS).where(RECORDS.c.expires_at <= now)).rowcount
