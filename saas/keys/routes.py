"""Key lifecycle over HTTP: admins for any account, customers for their own (/v1/keys). Each
route translates HTTP to a service call and its result to a public schema."""

from fastapi import APIRouter, status

from saas.keys import service
from saas.keys.models import ApiKey
from saas.keys.schemas import CustomerKeyCreate, KeyCreate, KeyCreated, KeyPublic, KeyRoll
from saas.kit.db import utcnow
from saas.kit.fields import Id
from saas.web.context import ADMIN_PREFIX, CUSTOMER_PREFIX, Metering
from saas.web.deps import CurrentPrincipal, DbSession, RequestActor
from saas.web.openapi import ADMIN, BODY, CUSTOMER, errors

admin_router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin: keys"], responses=ADMIN)
customer_router = APIRouter(prefix=f"{CUSTOMER_PREFIX}/keys", tags=["keys"], responses=CUSTOMER)
_ROLLING = "the calling key is being rolled"
_ADMIN_FORBIDDEN = errors(
    {403: f"Account suspended, the key lacks the 'admin' scope, or {_ROLLING}"}
)
_CUSTOMER_FORBIDDEN = errors({403: f"Account suspended, or {_ROLLING}"})
_NO_ACCOUNT = errors({404: "No such account"})
_NO_KEY = errors({404: "No such key"})

# What the customer routes cost (see saas/web/context.py): key management is never billed.
METERING = {name: Metering("keys") for name in ("my_keys", "create_my_key", "revoke_my_key")}


def created(key: ApiKey, plaintext: str) -> KeyCreated:
    return KeyCreated.of_new(key, plaintext, utcnow())


@admin_router.post(
    "/accounts/{account_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses={**BODY, **_NO_ACCOUNT, **_ADMIN_FORBIDDEN},
)
def create_key(
    account_id: Id,
    body: KeyCreate,
    session: DbSession,
    actor: RequestActor,
    principal: CurrentPrincipal,
) -> KeyCreated:
    """Create a key; the plaintext is in this answer only. A key being rolled may not (403)."""
    key, plaintext = service.create_key(
        session=session,
        account_id=account_id,
        actor=actor,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        caller=principal,
    )
    return created(key, plaintext)


@admin_router.get(
    "/accounts/{account_id}/keys", response_model=list[KeyPublic], responses=_NO_ACCOUNT
)
def list_keys(account_id: Id, session: DbSession) -> list[KeyPublic]:
    return KeyPublic.listing(service.list_keys(session, account_id))


@admin_router.delete(
    "/keys/{key_id}", response_model=KeyPublic, responses={**_NO_KEY, **_ADMIN_FORBIDDEN}
)
def revoke_key(
    key_id: Id, session: DbSession, actor: RequestActor, principal: CurrentPrincipal
) -> KeyPublic:
    """Revoke a key: every worker refuses it within a second. A key being rolled may not."""
    key = service.revoke_key(session=session, key_id=key_id, actor=actor, caller=principal)
    return KeyPublic.of(key, utcnow())


@admin_router.post(
    "/keys/{key_id}/roll",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses={
        **BODY,
        **_NO_KEY,
        **_ADMIN_FORBIDDEN,
        **errors({409: "The key is revoked, expired or already rolled"}),
    },
)
def roll_key(
    key_id: Id,
    body: KeyRoll,
    session: DbSession,
    actor: RequestActor,
    principal: CurrentPrincipal,
) -> KeyCreated:
    """A new key at once; the old one keeps working for `grace_seconds` (status `grace`), then
    stops. A revoked or expired key cannot be rolled (409); a key being rolled may not roll
    (403)."""
    new_key, plaintext = service.roll_key(
        session=session,
        key_id=key_id,
        grace_seconds=body.grace_seconds,
        actor=actor,
        caller=principal,
    )
    return created(new_key, plaintext)


@customer_router.get("", response_model=list[KeyPublic])
def my_keys(principal: CurrentPrincipal, session: DbSession) -> list[KeyPublic]:
    """Your account's keys (never their secrets)."""
    return KeyPublic.listing(service.list_keys(session, principal.account_id))


@customer_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses={
        **BODY,
        **errors({403: f"Account suspended, the plan's max_keys reached, or {_ROLLING}"}),
    },
)
def create_my_key(
    body: CustomerKeyCreate, principal: CurrentPrincipal, session: DbSession, actor: RequestActor
) -> KeyCreated:
    """A new key for your account, up to your plan's `max_keys` usable keys. It never outlives
    the key that asks for it, and a key in its grace period (rolled) may not ask."""
    key, plaintext = service.create_own_key(
        session=session,
        caller=principal,
        actor=actor,
        name=body.name,
        expires_at=body.expires_at,
    )
    return created(key, plaintext)


@customer_router.delete(
    "/{key_id}",
    response_model=KeyPublic,
    responses={**errors({404: "No such key in your account"}), **_CUSTOMER_FORBIDDEN},
)
def revoke_my_key(
    key_id: Id, principal: CurrentPrincipal, session: DbSession, actor: RequestActor
) -> KeyPublic:
    """Revoke one of your keys (another account's key id is 404)."""
    key = service.revoke_own_key(session=session, key_id=key_id, caller=principal, actor=actor)
    return KeyPublic.of(key, utcnow())
