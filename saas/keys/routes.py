"""Key lifecycle over HTTP: admins for any account, customers for their own (/v1/keys).
Revocation and rolls are published to every worker once committed."""

from typing import Annotated

from anyio.from_thread import run as run_async
from fastapi import APIRouter, Depends, Request, status
from sqlmodel import Session

from saas.accounts import service as accounts
from saas.audit import service as audit
from saas.db import as_utc, get_session, utcnow
from saas.errors import AppError, NotFound
from saas.keys import service
from saas.keys.models import ApiKey
from saas.keys.schemas import CustomerKeyCreate, KeyCreate, KeyCreated, KeyPublic, KeyRoll

admin_router = APIRouter(prefix="/admin", tags=["admin: keys"])
customer_router = APIRouter(prefix="/v1/keys", tags=["keys"])
DbSession = Annotated[Session, Depends(get_session)]


def invalidate(request: Request, kind: str, value: str | int) -> None:
    """From a sync route (a worker thread): after the commit, tell every worker."""
    run_async(request.app.state.invalidator.publish, kind, value)


def created(key: ApiKey, plaintext: str) -> KeyCreated:
    return KeyCreated(**KeyPublic.of(key, utcnow()).model_dump(), key=plaintext)


def _account_or_404(session: Session, account_id: int):  # type: ignore[no-untyped-def]
    account = accounts.find_account(session, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} not found.")
    return account


@admin_router.post(
    "/accounts/{account_id}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated
)
def create_key(
    account_id: int, body: KeyCreate, request: Request, session: DbSession
) -> KeyCreated:
    """Create a key; the plaintext is in this answer only."""
    account = _account_or_404(session, account_id)
    try:
        key, plaintext = service.create_key(
            session, account, name=body.name, scopes=body.scopes, expires_at=as_utc(body.expires_at)
        )
    except ValueError as exc:
        raise AppError(str(exc), status_code=422) from None
    audit.record(
        session,
        request.state.principal,
        "key.create",
        "key",
        key.id,
        {"account_id": account.id, "name": body.name, "scopes": sorted(body.scopes)},
    )
    return created(key, plaintext)


@admin_router.get("/accounts/{account_id}/keys", response_model=list[KeyPublic])
def list_keys(account_id: int, session: DbSession) -> list[KeyPublic]:
    _account_or_404(session, account_id)
    now = utcnow()
    return [KeyPublic.of(key, now) for key in service.list_keys(session, account_id)]


def _revoke(session: Session, request: Request, key: ApiKey) -> KeyPublic:
    was_active = key.revoked_at is None
    service.revoke_key(session, key.id)
    if was_active:
        audit.record(
            session,
            request.state.principal,
            "key.revoke",
            "key",
            key.id,
            {"account_id": key.account_id},
        )
    session.commit()
    invalidate(request, "key", key.key_hash)
    return KeyPublic.of(key, utcnow())


@admin_router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke_key(key_id: int, request: Request, session: DbSession) -> KeyPublic:
    """Revoke a key: every worker refuses it within a second."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"Key {key_id} not found.")
    return _revoke(session, request, key)


@admin_router.post(
    "/keys/{key_id}/roll", status_code=status.HTTP_201_CREATED, response_model=KeyCreated
)
def roll_key(key_id: int, body: KeyRoll, request: Request, session: DbSession) -> KeyCreated:
    """A new key at once; the old one keeps working for `grace_seconds`, then stops."""
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound(f"Key {key_id} not found or revoked.")
    new_key, plaintext = service.roll_key(session, key, body.grace_seconds)
    audit.record(
        session,
        request.state.principal,
        "key.roll",
        "key",
        key.id,
        {"new_key_id": new_key.id, "grace_seconds": body.grace_seconds},
    )
    answer = created(new_key, plaintext)
    session.commit()
    invalidate(request, "key", key.key_hash)  # its cached entry carries the old expiry
    return answer


@customer_router.get("", response_model=list[KeyPublic])
def my_keys(request: Request, session: DbSession) -> list[KeyPublic]:
    """Your account's keys (never their secrets)."""
    now = utcnow()
    return [
        KeyPublic.of(k, now) for k in service.list_keys(session, request.state.principal.account_id)
    ]


@customer_router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_my_key(body: CustomerKeyCreate, request: Request, session: DbSession) -> KeyCreated:
    """A new key for your account, up to your plan's `max_keys` active keys."""
    principal = request.state.principal
    account = _account_or_404(session, principal.account_id)
    plan = accounts.get_plan(session, principal.plan_name)
    limit = plan.max_keys if plan else 0
    if service.active_key_count(session, account.id) >= limit:
        raise AppError(f"Your plan allows {limit} active keys; revoke one first.", status_code=403)
    key, plaintext = service.create_key(
        session, account, name=body.name, expires_at=as_utc(body.expires_at)
    )
    audit.record(session, principal, "key.create", "key", key.id, {"account_id": account.id})
    return created(key, plaintext)


@customer_router.delete("/{key_id}", response_model=KeyPublic)
def revoke_my_key(key_id: int, request: Request, session: DbSession) -> KeyPublic:
    """Revoke one of your keys. Another account's key is "not found", never "forbidden"."""
    key = session.get(ApiKey, key_id)
    if key is None or key.account_id != request.state.principal.account_id:
        raise NotFound(f"Key {key_id} not found.")
    return _revoke(session, request, key)
