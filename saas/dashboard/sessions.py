"""Dashboard sessions: an API key, presented once in the sign-in form, exchanged for a random
session id. The browser keeps only that id (in an HttpOnly cookie); the database keeps its hash,
the key it stands for, a CSRF token and an expiry. Whether the session may still be used is
decided on every page by the key's cached status, as for the API (saas/dashboard/auth.py)."""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from saas.dashboard.models import DashboardSession
from saas.keys.models import ApiKey


def hash_id(session_id: str) -> str:
    # 256 random bits: a plain SHA-256 is enough (nothing to brute-force), as for API keys.
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(
    *, session: Session, key_id: int, now: datetime, lifetime: timedelta
) -> tuple[str, DashboardSession]:
    """A new session for `key_id`: its id (which exists only in this return value and the
    cookie) and its row. Expired rows go at the same time: sign-ins are rare enough that no
    cleaning job is needed."""
    session.exec(delete(DashboardSession).where(col(DashboardSession.expires_at) <= now))
    session_id = secrets.token_urlsafe(32)
    row = DashboardSession(
        id_hash=hash_id(session_id),
        key_id=key_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(row)
    session.flush()
    return session_id, row


def find_session(
    session: Session, session_id: str, now: datetime
) -> tuple[DashboardSession, str] | None:
    """The unexpired session with this id, and the hash of the key it stands for."""
    found = session.exec(
        select(DashboardSession, ApiKey.key_hash)
        .join(ApiKey, col(ApiKey.id) == col(DashboardSession.key_id))
        .where(DashboardSession.id_hash == hash_id(session_id))
        .where(col(DashboardSession.expires_at) > now)
    ).first()
    return None if found is None else (found[0], found[1])


def close_session(*, session: Session, session_id: str) -> None:
    session.exec(
        delete(DashboardSession).where(col(DashboardSession.id_hash) == hash_id(session_id))
    )


def csrf_matches(expected: str, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(expected.encode(), sent.encode())
