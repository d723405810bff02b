"""API-key authentication for every route under /v1 and /admin, as middleware so that no new
route can forget it: the key from the request's headers, judged by saas/keys/authentication.py
(the same function the dashboard's sign-in uses). Public paths (health, docs) pass through."""

from starlette.types import ASGIApp, Receive, Scope, Send

from saas.keys.authentication import Refusal, authenticate
from saas.keys.authenticator import KeyAuthenticator
from saas.problems.responses import json_error
from saas.ratelimit.bruteforce import FailedAuthGuard
from saas.web.context import Area, context_of

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
        found = await authenticate(
            self.authenticator,
            self.guard,
            key=extract_key(scope["headers"]),
            address=scope["client"][0] if scope.get("client") else "unknown",
            admin=context.area is Area.admin,
        )
        if isinstance(found, Refusal):
            # 401s say how to authenticate (RFC 9110); the others are about the key or address.
            challenge = _CHALLENGE if found.problem.status == 401 else {}
            refused = json_error(found.problem, found.detail, {**found.headers, **challenge})
            await refused(scope, receive, send)
            return
        context.principal = found
        await self.app(scope, receive, send)
