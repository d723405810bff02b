"""Key lifecycle, and the lookup that authentication runs on a cache miss.

Each write validates, writes, records its audit entry and announces what running workers must
forget; it only flushes: the caller's session commits once, then publishes (saas/web/deps.py; the
CLI: saas/cli/session.py)."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, update
from sqlmodel import Session, col, select

from saas import problems
from saas.accounts import service as accounts
from saas.accounts.models import Account, AccountStatus, Plan
from saas.audit import service as audit
from saas.auth import key_format
from saas.auth.principal import KNOWN_SCOPES, Actor, KeyStatus, Principal
from saas.keys.models import ApiKey
from saas.kit.changes import Change, announce
from saas.kit.db import as_utc, table_of, utcnow
from saas.problems.errors import Conflict, Forbidden, Invalid, NotFound
from saas.ratelimit.windows import parse_windows


def list_keys(session: Session, account_id: int) -> list[ApiKey]:
    accounts.get_account(session, account_id)
    statement = select(ApiKey).where(ApiKey.account_id == account_id).order_by(col(ApiKey.id))
    return list(session.exec(statement))


def get_key(session: Session, key_id: int, *, account_id: int | None = None) -> ApiKey:
    """The key; with `account_id`, only if it belongs to that account (a customer never learns
    that another account's key exists)."""
    key = session.get(ApiKey, key_id)
    if key is None or (account_id is not None and key.account_id != account_id):
        raise NotFound(f"Key {key_id} not found.")
    return key


def _new_key(
    session: Session,
    *,
    account_id: int,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """The stored row and the plaintext key, which exists only in this return value."""
    scope_set = set(scopes)
    unknown = scope_set - KNOWN_SCOPES
    if unknown:
        known = ", ".join(sorted(KNOWN_SCOPES))
        raise Invalid(f"Unknown scope(s): {', '.join(sorted(unknown))}. Known scopes: {known}.")
    plaintext = key_format.generate_key()
    key = ApiKey(
        account_id=account_id,
        name=name,
        prefix=key_format.display_prefix(plaintext),
        key_hash=key_format.hash_key(plaintext),
        scopes=" ".join(sorted(scope_set)),
        expires_at=as_utc(expires_at),
    )
    session.add(key)
    session.flush()
    return key, plaintext


def _audit_create(session: Session, key: ApiKey, actor: Actor) -> None:
    audit.record(
        session,
        actor=actor,
        action="key.create",
        object_id=key.id,
        changes={
            "account_id": key.account_id,
            "name": key.name,
            "scopes": sorted(key.scope_set),
            "expires_at": as_utc(key.expires_at).isoformat() if key.expires_at else None,
        },
    )


def create_key(
    *,
    session: Session,
    account_id: int,
    actor: Actor,
    name: str = "",
    scopes: Iterable[str] = (),
    expires_at: datetime | None = None,
    caller: Principal | None = None,
) -> tuple[ApiKey, str]:
    """An operator's key for any account, with any known scope. `caller`: the key asking (the
    admin API, the dashboard), which must not be one being rolled; the CLI has none."""
    if caller is not None:
        _check_caller(caller, utcnow())
    accounts.get_account(session, account_id)
    key, plaintext = _new_key(
        session, account_id=account_id, name=name, scopes=scopes, expires_at=expires_at
    )
    _audit_create(session, key, actor)
    return key, plaintext


def _check_caller(caller: Principal, now: datetime) -> None:
    """A key being replaced (rolled) must not mint or revoke keys: a roll is how a leaked key
    is contained, and its holder would otherwise make itself a key the roll does not cover."""
    if caller.status(now) is KeyStatus.grace:
        detail = "This key is being replaced (rolled); manage keys with its successor."
        raise Forbidden(detail, problems.KEY_BEING_REPLACED)


def create_own_key(
    *,
    session: Session,
    caller: Principal,
    actor: Actor,
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A customer's key for its own account: no scopes, at most the plan's `max_keys` usable,
    and never outliving the key that asks for it."""
    now = utcnow()
    _check_caller(caller, now)
    # Locks the account row (PostgreSQL) so that concurrent requests count keys one at a time.
    account = session.exec(
        select(Account).where(Account.id == caller.account_id).with_for_update()
    ).first()
    if account is None:
        raise NotFound(f"Account {caller.account_id} not found.")
    limit = accounts.plan_of(session, account).max_keys
    usable = sum(1 for key in list_keys(session, caller.account_id) if key.status(now).usable)
    if usable >= limit:
        detail = f"Your plan allows {limit} active keys; revoke one first."
        raise Forbidden(detail, problems.KEY_LIMIT_REACHED, limit=limit)
    if caller.expires_at is not None:
        wanted = as_utc(expires_at)
        expires_at = caller.expires_at if wanted is None else min(wanted, caller.expires_at)
    key, plaintext = _new_key(
        session, account_id=caller.account_id, name=name, scopes=(), expires_at=expires_at
    )
    _audit_create(session, key, actor)
    return key, plaintext


def revoke_own_key(*, session: Session, key_id: int, caller: Principal, actor: Actor) -> ApiKey:
    """A customer revokes one of its account's keys (another account's is 404)."""
    return revoke_key(
        session=session, key_id=key_id, actor=actor, account_id=caller.account_id, caller=caller
    )


def revoke_key(
    *,
    session: Session,
    key_id: int,
    actor: Actor,
    account_id: int | None = None,
    caller: Principal | None = None,
) -> ApiKey:
    """Revoke a key (with `account_id`, only that account's): every worker refuses it within a
    second. Revoking a revoked key changes nothing and records nothing. `caller`: as for
    create_key."""
    if caller is not None:
        _check_caller(caller, utcnow())
    key = get_key(session, key_id, account_id=account_id)
    if key.revoked_at is not None:
        return key
    key.revoked_at = utcnow()
    audit.save(
        session, key, actor=actor, action="key.revoke", changes={"account_id": key.account_id}
    )
    announce(session, Change("key", key.key_hash))
    return key


def roll_key(
    *,
    session: Session,
    key_id: int,
    grace_seconds: int,
    actor: Actor,
    caller: Principal | None = None,
) -> tuple[ApiKey, str]:
    """A new key with the same account, name, scopes and expiry, at once; the old one keeps
    working for `grace_seconds` (its expiry is brought forward, never pushed back). `caller`:
    as for create_key."""
    now = utcnow()
    if caller is not None:
        _check_caller(caller, now)
    key = get_key(session, key_id)
    status = key.status(now)
    if status is KeyStatus.grace:
        # Its expiry is now the grace deadline, which a successor must not inherit.
        detail = f"Key {key_id} was already rolled; roll its successor instead."
        raise Conflict(detail, problems.KEY_NOT_ROLLABLE)
    if not status.usable:
        detail = f"Key {key_id} is {status}; create a new key instead of rolling it."
        raise Conflict(detail, problems.KEY_NOT_ROLLABLE)
    expires_at = as_utc(key.expires_at)  # the successor keeps the expiry the key had
    deadline = now + timedelta(seconds=grace_seconds)
    # Claimed with one conditional UPDATE, so of two concurrent rolls exactly one wins.
    claimed = session.exec(
        update(ApiKey)
        .where(
            col(ApiKey.id) == key_id,
            col(ApiKey.rolled_at).is_(None),
            col(ApiKey.revoked_at).is_(None),
        )
        .values(
            rolled_at=now,
            expires_at=deadline if expires_at is None else min(deadline, expires_at),
        )
        .execution_options(synchronize_session="fetch")
    )
    if claimed.rowcount != 1:
        detail = f"Key {key_id} was rolled or revoked meanwhile."
        raise Conflict(detail, problems.KEY_NOT_ROLLABLE)
    new_key, plaintext = _new_key(
        session,
        account_id=key.account_id,
        name=key.name,
        scopes=key.scope_set,
        expires_at=expires_at,
    )
    audit.record(
        session,
        actor=actor,
        action="key.roll",
        object_id=key_id,
        changes={"new_key_id": new_key.id, "grace_seconds": grace_seconds},
    )
    announce(session, Change("key", key.key_hash))  # its cached entry carries the old expiry
    return new_key, plaintext


# The request path


def lookup_principal(engine: Engine, key_hash: str) -> Principal | None:
    """One indexed query by hash (the unique index finds exactly the presented key, so there is
    nothing left to compare). Revoked and expired keys are returned too: the caller says why."""
    statement = (
        select(ApiKey, Account, Plan)
        .join(Account, col(Account.id) == col(ApiKey.account_id))
        .join(Plan, col(Plan.id) == col(Account.plan_id))
        .where(ApiKey.key_hash == key_hash)
    )
    with Session(engine) as session:
        row = session.exec(statement).first()
    if row is None:
        return None
    key, account, plan = row
    assert key.id is not None and account.id is not None
    smallest_window = min(window.limit for window in parse_windows(plan.rate_limit))
    return Principal(
        key_id=key.id,
        key_prefix=key.prefix,
        key_hash=key.key_hash,
        scopes=key.scope_set,
        expires_at=as_utc(key.expires_at),
        revoked=key.revoked_at is not None,
        rolled=key.rolled_at is not None,
        account_id=account.id,
        account_name=account.name,
        account_active=account.status == AccountStatus.active,
        plan_name=plan.name,
        rate_limit=plan.rate_limit,
        monthly_quota=plan.monthly_quota,
        max_text_chars=plan.max_text_chars,
        models=tuple(plan.models) if plan.models is not None else None,
        max_batch_texts=plan.max_batch_texts,
        batch_limit=min(plan.max_batch_texts, smallest_window),
        quota_alerts=account.webhook_url is not None and plan.monthly_quota is not None,
    )


def record_last_used(engine: Engine, last_used: Mapping[int, datetime]) -> None:
    """One executemany for every key seen since the last flush, instead of a write per request."""
    if not last_used:
        return
    table = table_of(ApiKey)
    statement = (
        update(table)
        .where(table.c.id == bindparam("key_id"))
        .values(last_used_at=bindparam("used_at"))
    )
    rows = [{"key_id": key_id, "used_at": used_at} for key_id, used_at in last_used.items()]
    with engine.begin() as connection:
        connection.execute(statement, rows)
