"""API-key authentication for every route under /v1 and /admin, as middleware so that no new
route can forget it. Order of checks (each with its reason): missing, malformed, unknown, revoked,
expired (401); suspended account, missing scope (403). Public paths (health, docs) pass through.
An address that presents too many bad keys is refused with 429 for a while (FailedAuthGuard)."""

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from saas import security
from saas.db import utcnow
from saas.errors import json_error
from saas.keys.authenticator import KeyAuthenticator
from saas.keys.service import ADMIN_SCOPE, Principal
from saas.ratelimit.bruteforce import FailedAuthGuard
from saas.ratelimit.windows import ceil_seconds

log = structlog.get_logger(__name__)
PROTECTED_PREFIXES = ("/v1/", "/admin/")
ADMIN_PREFIX = "/admin/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


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


def app_path(scope: Scope) -> str:
    """The path below SAAS_ROOT_PATH, whether or not the server left the prefix in."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def too_many_failures(seconds: float):  # type: ignore[no-untyped-def]
    wait = max(1, ceil_seconds(seconds))
    detail = f"Too many failed authentication attempts from your address; retry in {wait} s."
    return json_error(429, detail, {"Retry-After": str(wait)})


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
        path = app_path(scope) + "/"
        if not path.startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return

        client_ip = scope["client"][0] if scope.get("client") else "unknown"
        blocked = self.guard.blocked_for(client_ip)
        if blocked is not None:
            await too_many_failures(blocked)(scope, receive, send)
            return
        key = extract_key(scope["headers"])
        if key is None:
            detail = "Missing API key: send 'Authorization: Token <key>' or 'X-API-Key: <key>'."
            await json_error(401, detail, _CHALLENGE)(scope, receive, send)
            return
        try:
            principal, failure = await self._check(key)
        except Exception:
            # Never fail open: without the database no key can be checked.
            log.exception("key_lookup_failed")
            detail = "Authentication is temporarily unavailable; retry shortly."
            await json_error(503, detail, {"Retry-After": "1"})(scope, receive, send)
            return
        if failure is not None:
            block = await self.guard.record_failure(client_ip)
            response = too_many_failures(block) if block else json_error(401, failure, _CHALLENGE)
            await response(scope, receive, send)
            return
        assert principal is not None
        if not principal.account_active:
            await json_error(403, "Account is suspended.")(scope, receive, send)
            return
        if path.startswith(ADMIN_PREFIX) and ADMIN_SCOPE not in principal.scopes:
            await json_error(403, "This key lacks the 'admin' scope.")(scope, receive, send)
            return

        self.authenticator.touch(principal.key_id)
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _check(self, key: str) -> tuple[Principal | None, str | None]:
        """The key's principal, or the reason it is refused (401)."""
        if not security.is_well_formed(key):
            return None, "Malformed API key."
        principal = await self.authenticator.lookup(key)
        if principal is None:
            return None, "Invalid API key."
        if principal.revoked:
            return None, "API key has been revoked."
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            return None, "API key has expired."
        return principal, None
