"""API-key authentication for every route under /v1 and /admin, as middleware so that no new
route can forget it. Order of checks (each with its reason): missing, malformed, unknown, revoked,
expired (401); suspended account, missing scope (403). Public paths (health, docs) pass through.
An address that presents too many bad keys is refused with 429 for a while (FailedAuthGuard),
without a database lookup, except for keys this worker saw authenticate recently: one
misconfigured client must not shut out every customer behind the same NAT or proxy."""

import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from saas import problems
from saas.auth import key_format
from saas.auth.principal import KeyStatus, Principal
from saas.keys.authenticator import KeyAuthenticator
from saas.kit.db import utcnow
from saas.problems import ProblemType
from saas.problems.responses import json_error
from saas.ratelimit.bruteforce import FailedAuthGuard
from saas.ratelimit.windows import ceil_seconds
from saas.web.context import Area, context_of

log = structlog.get_logger(__name__)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}
_REFUSED = {
    KeyStatus.revoked: (problems.KEY_REVOKED, "API key has been revoked."),
    KeyStatus.expired: (problems.KEY_EXPIRED, "API key has expired."),
}
_MALFORMED = (problems.MALFORMED_API_KEY, "Malformed API key.")
_UNKNOWN = (problems.INVALID_API_KEY, "Invalid API key.")


def extract_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """`Authorization: Token <key>` (NLP Cloud), `Authorization: Bearer <key>` or `X-API-Key`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in ("token", "bearer") and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


def too_many_failures(seconds: float) -> Response:
    wait = max(1, ceil_seconds(seconds))
    detail = f"Too many failed authentication attempts from your address; retry in {wait} s."
    return json_error(problems.TOO_MANY_FAILED_KEYS, detail, {"Retry-After": str(wait)})


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, *, authenticator: KeyAuthenticator, guard: FailedAuthGuard
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = context_of(scope)
        if context is None:  # never pass a request it cannot classify
            raise RuntimeError("RequestContextMiddleware must run before AuthMiddleware")
        if context.area is Area.public:
            await self.app(scope, receive, send)
            return

        client_ip = scope["client"][0] if scope.get("client") else "unknown"
        key = extract_key(scope["headers"])
        # Only a well-formed key is hashed (and looked up): the rest is refused locally.
        key_hash = key_format.hash_key(key) if key and key_format.is_well_formed(key) else None
        blocked = self.guard.blocked_for(client_ip)
        if blocked is not None and not (key_hash and self.authenticator.vouches_for(key_hash)):
            await too_many_failures(blocked)(scope, receive, send)
            return
        if key is None:
            detail = "Missing API key: send 'Authorization: Token <key>' or 'X-API-Key: <key>'."
            await json_error(problems.MISSING_API_KEY, detail, _CHALLENGE)(scope, receive, send)
            return
        try:
            principal, failure = await self._check(key_hash)
        except Exception:
            # Never fail open: without the database no key can be checked.
            log.exception("key_lookup_failed")
            detail = "Authentication is temporarily unavailable; retry shortly."
            unavailable = problems.AUTHENTICATION_UNAVAILABLE
            await json_error(unavailable, detail, {"Retry-After": "1"})(scope, receive, send)
            return
        if key_hash is not None:
            self.authenticator.vouch(key_hash, principal is not None and principal.account_active)
        if principal is None:
            assert failure is not None
            block = await self.guard.record_failure(client_ip)
            response = too_many_failures(block) if block else json_error(*failure, _CHALLENGE)
            await response(scope, receive, send)
            return
        if not principal.account_active:
            suspended = json_error(problems.ACCOUNT_SUSPENDED, "Account is suspended.")
            await suspended(scope, receive, send)
            return
        if context.area is Area.admin and not principal.is_admin:
            detail = "This key lacks the 'admin' scope."
            await json_error(problems.ADMIN_SCOPE_REQUIRED, detail)(scope, receive, send)
            return

        self.authenticator.touch(principal.key_id)
        context.principal = principal
        await self.app(scope, receive, send)

    async def _check(
        self, key_hash: str | None
    ) -> tuple[Principal | None, tuple[ProblemType, str] | None]:
        """The key's principal, or why it is refused (401); `key_hash` is None for a key that
        is not well-formed."""
        if key_hash is None:
            return None, _MALFORMED
        principal = await self.authenticator.lookup_hash(key_hash)
        if principal is None:
            return None, _UNKNOWN
        status = principal.status(utcnow())
        if not status.usable:
            return None, _REFUSED[status]
        return principal, None
