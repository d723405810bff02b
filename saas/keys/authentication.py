"""Who presents an API key: one `authenticate()` for the API (saas/pipeline/auth.py) and the
dashboard's sign-in, with one table of refusals. Order of checks (each with its reason):
an address blocked by the failed-key guard (429, without a database lookup, except for keys
this worker saw authenticate recently: one misconfigured client must not shut out every
customer behind the same NAT or proxy); missing, malformed, unknown, revoked, expired (401,
each counted by the guard); suspended account, missing admin scope (403)."""

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from saas import problems
from saas.auth import key_format
from saas.auth.principal import KeyStatus, Principal
from saas.keys.authenticator import KeyAuthenticator
from saas.kit.db import utcnow
from saas.problems import ProblemType
from saas.ratelimit.bruteforce import FailedAuthGuard
from saas.ratelimit.windows import ceil_seconds

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    problem: ProblemType
    detail: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_after(self) -> int | None:
        wait = self.headers.get("Retry-After")
        return int(wait) if wait is not None else None


_MISSING = Refusal(
    problems.MISSING_API_KEY,
    "Missing API key: send 'Authorization: Token <key>' or 'X-API-Key: <key>'.",
)
_MALFORMED = Refusal(problems.MALFORMED_API_KEY, "Malformed API key.")
_UNKNOWN = Refusal(problems.INVALID_API_KEY, "Invalid API key.")
_BY_STATUS = {
    KeyStatus.revoked: Refusal(problems.KEY_REVOKED, "API key has been revoked."),
    KeyStatus.expired: Refusal(problems.KEY_EXPIRED, "API key has expired."),
}
_SUSPENDED = Refusal(problems.ACCOUNT_SUSPENDED, "Account is suspended.")
_NOT_ADMIN = Refusal(problems.ADMIN_SCOPE_REQUIRED, "This key lacks the 'admin' scope.")
_UNAVAILABLE = Refusal(
    problems.AUTHENTICATION_UNAVAILABLE,
    "Authentication is temporarily unavailable; retry shortly.",
    {"Retry-After": "1"},
)


def too_many_failures(seconds: float) -> Refusal:
    wait = max(1, ceil_seconds(seconds))
    detail = f"Too many failed authentication attempts from your address; retry in {wait} s."
    return Refusal(problems.TOO_MANY_FAILED_KEYS, detail, {"Retry-After": str(wait)})


def refusal_of(principal: Principal | None, now: datetime) -> Refusal | None:
    """Why a looked-up key may not be used (None: it may): unknown, revoked, expired, or its
    account suspended. Also what ends a dashboard session (saas/dashboard/auth.py)."""
    if principal is None:
        return _UNKNOWN
    status = principal.status(now)
    if not status.usable:
        return _BY_STATUS[status]
    if not principal.account_active:
        return _SUSPENDED
    return None


async def authenticate(
    authenticator: KeyAuthenticator,
    guard: FailedAuthGuard,
    *,
    key: str | None,
    address: str,
    admin: bool = False,
) -> Principal | Refusal:
    """The key's principal, or why not. `admin`: the route needs the admin scope."""
    # Only a well-formed key is hashed (and looked up): the rest is refused locally.
    key_hash = key_format.hash_key(key) if key and key_format.is_well_formed(key) else None
    blocked = guard.blocked_for(address)
    if blocked is not None and not (key_hash and authenticator.vouches_for(key_hash)):
        return too_many_failures(blocked)
    if key is None:
        return _MISSING
    if key_hash is None:
        refusal: Refusal | None = _MALFORMED
        principal = None
    else:
        try:
            principal = await authenticator.lookup_hash(key_hash)
        except Exception:  # never fail open: without the database no key can be checked
            log.exception("key_lookup_failed")
            return _UNAVAILABLE
        refusal = refusal_of(principal, utcnow())
        authenticator.vouch(key_hash, refusal is None)
    if refusal is not None:
        if refusal.problem.status == 401 and (block := await guard.record_failure(address)):
            return too_many_failures(block)
        return refusal
    assert principal is not None
    if admin and not principal.is_admin:
        return _NOT_ADMIN
    authenticator.touch(principal.key_id)
    return principal
