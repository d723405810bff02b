"""Key lifecycle and the lookup that authentication runs on a cache miss."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, update
from sqlmodel import Session, select

from saas import security
from saas.accounts.models import Account, AccountStatus, Plan
from saas.db import as_utc, utcnow
from saas.keys.models import ApiKey
from saas.ratelimit.windows import parse_windows

ADMIN_SCOPE = "admin"
KNOWN_SCOPES = frozenset({ADMIN_SCOPE})


@dataclass(frozen=True, slots=True)
class Principal:
    """Everything the request path needs to know about a key, cached for `key_cache_ttl`."""

    key_id: int
    key_prefix: str
    key_hash: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    account_id: int
    account_name: str
    account_active: bool
    plan_name: str
    rate_limit: str
    monthly_quota: int | None
    max_text_chars: int
    models: tuple[str, ...] | None
    max_batch_texts: int
    # The account has a webhook and the plan a quota: only then do commits check alert thresholds.
    quota_alerts: bool = False

    def may_use_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def batch_limit(self) -> int:
        """Most texts one batch request may carry: the plan's `max_batch_texts`, but never more
        than its smallest rate-limit window holds, since each text takes a place in every window
        and a larger batch could never be admitted."""
        return min(self.max_batch_texts, *(w.limit for w in parse_windows(self.rate_limit)))


def create_key(
    session: Session,
    account: Account,
    *,
    name: str = "",
    scopes: Iterable[str] = (),
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key, which exists only in this return value."""
    scope_set = set(scopes)
    unknown = scope_set - KNOWN_SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(sorted(unknown))}")
    plaintext = security.generate_key()
    key = ApiKey(
        account_id=account.id,
        name=name,
        prefix=security.display_prefix(plaintext),
        key_hash=security.hash_key(plaintext),
        scopes=" ".join(sorted(scope_set)),
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key, plaintext


def list_keys(session: Session, account_id: int) -> list[ApiKey]:
    statement = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id)
    return list(session.exec(statement))


def revoke_key(session: Session, key_id: int) -> ApiKey | None:
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
    return key


def lookup_principal(engine: Engine, key_hash: str) -> Principal | None:
    """One indexed query by hash. Revoked keys are returned too, so the caller can say why."""
    statement = (
        select(ApiKey, Account, Plan)
        .join(Account, Account.id == ApiKey.account_id)
        .join(Plan, Plan.id == Account.plan_id)
        .where(ApiKey.key_hash == key_hash)
    )
    with Session(engine) as session:
        row = session.exec(statement).first()
    if row is None:
        return None
    key, account, plan = row
    if not security.hashes_match(key.key_hash, key_hash):
        return None
    return Principal(
        key_id=key.id,
        key_prefix=key.prefix,
        key_hash=key.key_hash,
        scopes=key.scope_set,
        expires_at=as_utc(key.expires_at),
        revoked=key.revoked_at is not None,
        account_id=account.id,
        account_name=account.name,
        account_active=account.status == AccountStatus.active,
        plan_name=plan.name,
        rate_limit=plan.rate_limit,
        monthly_quota=plan.monthly_quota,
        max_text_chars=plan.max_text_chars,
        models=tuple(plan.models) if plan.models is not None else None,
        max_batch_texts=plan.max_batch_texts,
        quota_alerts=account.webhook_url is not None and plan.monthly_quota is not None,
    )


def record_last_used(engine: Engine, last_used: Mapping[int, datetime]) -> None:
    """One executemany for every key seen since the last flush, instead of a write per request."""
    if not last_used:
        return
    statement = (
        update(ApiKey.__table__)
        .where(ApiKey.__table__.c.id == bindparam("key_id"))
        .values(last_used_at=bindparam("used_at"))
    )
    rows = [{"key_id": key_id, "used_at": used_at} for key_id, used_at in last_used.items()]
    with engine.begin() as connection:
        connection.execute(statement, rows)


def roll_key(session: Session, key: ApiKey, grace_seconds: int) -> tuple[ApiKey, str]:
    """A new key with the same account, name and scopes; the old one keeps working for
    `grace_seconds` (its expiry is brought forward, never pushed back)."""
    owner = session.get(Account, key.account_id)
    assert owner is not None
    new_key, plaintext = create_key(
        session, owner, name=key.name, scopes=key.scope_set, expires_at=as_utc(key.expires_at)
    )
    deadline = utcnow() + timedelta(seconds=grace_seconds)
    current = as_utc(key.expires_at)
    key.expires_at = deadline if current is None or deadline < current else current
    session.add(key)
    session.flush()
    return new_key, plaintext


def active_key_count(session: Session, account_id: int) -> int:
    now = utcnow()
    return sum(
        1
        for key in list_keys(session, account_id)
        if key.revoked_at is None and (key.expires_at is None or as_utc(key.expires_at) > now)
    )
