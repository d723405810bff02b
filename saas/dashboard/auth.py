"""Who is looking at a dashboard page: signing in with an API key, the session each page checks
(through the same cached key status as the API), and the CSRF check of every form.

Guessing is as slow here as on the API: a bad key at sign-in and an unknown session id both
count toward the address's failed-key guard (SAAS_AUTH_FAILURES_PER_IP), and a blocked address
is refused without a database lookup, except for the keys and sessions this worker saw
authenticate recently. Writes (sign-ins, forms) have a limit of their own per key
(SAAS_DASHBOARD_WRITES_PER_KEY)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from saas import problems
from saas.auth.principal import Actor, Principal
from saas.dashboard import sessions
from saas.dashboard.pages import COOKIE, SignedOut
from saas.keys.authentication import Refusal, authenticate, refusal_of, too_many_failures
from saas.kit.db import utcnow
from saas.problems.errors import AppError, Forbidden
from saas.ratelimit.windows import ceil_seconds
from saas.web.services import services_of


@dataclass(frozen=True, slots=True)
class Visitor:
    principal: Principal
    session_id: str
    csrf_token: str

    @property
    def actor(self) -> Actor:
        return Actor.of(self.principal, via="dashboard")


def _find(engine: Engine, session_id: str, now: datetime) -> tuple[str, str] | None:
    with Session(engine) as session:
        found = sessions.find_session(session, session_id, now)
        return None if found is None else (found[0].csrf_token, found[1])


def _open(engine: Engine, key_id: int, now: datetime, lifetime: timedelta) -> str:
    with Session(engine) as session:
        session_id, _ = sessions.open_session(
            session=session, key_id=key_id, now=now, lifetime=lifetime
        )
        session.commit()
        return session_id


def close(engine: Engine, session_id: str) -> None:
    with Session(engine) as session:
        sessions.close_session(session=session, session_id=session_id)
        session.commit()


def posted_from_another_site(request: Request) -> bool:
    """Whether a browser posted this from another site's page. The sign-in form has no session
    yet, so no CSRF token: browsers name the form's site in Sec-Fetch-Site (since 2020-2023) or
    in Origin (every browser that posts forms); a client without either is not a browser."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host")  # "null" has no netloc


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _wait(seconds: float) -> int:
    return max(1, ceil_seconds(seconds))


def _signed_out(refusal: Refusal, suffix: str = "") -> SignedOut:
    """The sign-in page for a refused key, with the status the API would answer."""
    message = f"{refusal.detail} {suffix}".strip()
    return SignedOut(message, refusal.problem.status, retry_after=refusal.retry_after)


def _vouched_session(session_id: str) -> str:
    """What the authenticator's vouch cache knows a session by: the hash of its id (what the
    database keeps), apart from the keys' hashes."""
    return f"session:{sessions.hash_id(session_id)}"


class AddressBlocked(AppError):
    """A session this worker cannot vouch for, from an address the failed-key guard blocks: a
    page that says when to come back, and the cookie stays (the session may well be valid;
    another worker may have seen it)."""

    def __init__(self, blocked: float) -> None:
        wait = _wait(blocked)
        super().__init__(
            f"Too many failed attempts from your address; retry in {wait} s.",
            problems.TOO_MANY_FAILED_KEYS,
            headers={"Retry-After": str(wait)},
        )


class TooManyWrites(AppError):
    def __init__(self, blocked: float) -> None:
        self.wait = _wait(blocked)
        super().__init__(
            f"Too many changes from this key in a short time; retry in {self.wait} s.",
            problems.TOO_MANY_DASHBOARD_WRITES,
            headers={"Retry-After": str(self.wait)},
        )


async def _count_write(request: Request, key_id: int) -> None:
    """One more dashboard write by this key, or TooManyWrites (429) once it has made too many."""
    writes = services_of(request).dashboard_writes
    identity = str(key_id)
    blocked = writes.blocked_for(identity)
    if blocked is None:
        blocked = await writes.count(identity)
    if blocked is not None:
        raise TooManyWrites(blocked)


async def _end_previous(request: Request) -> None:
    """Whatever a sign-in gives, the browser's old session ends with it."""
    previous = request.cookies.get(COOKIE)
    if previous:
        await run_in_threadpool(close, services_of(request).database, previous)


async def sign_in(request: Request, api_key: str) -> tuple[Principal, str]:
    """The key's principal and a new session id, or SignedOut saying why not: the API's
    authentication (saas/keys/authentication.py), failed attempts counted by the same guard. A
    sign-in is a write of its key (a session row)."""
    services = services_of(request)
    found = await authenticate(
        services.authenticator,
        services.failed_auth,
        key=api_key.strip(),
        address=_address(request),
    )
    if isinstance(found, Refusal):
        if found.problem.status not in (401, 403):
            # A refused address (429) or an outage (503) says nothing of the browser's session
            # (and the database may be what failed): a page that keeps its cookie.
            raise AppError(found.detail, found.problem, headers=found.headers)
        await _end_previous(request)  # a refused key ends it
        raise _signed_out(found)
    try:
        await _count_write(request, found.key_id)
    except TooManyWrites as exc:  # the browser's session, if any, goes on
        raise SignedOut(exc.detail, 429, retry_after=exc.wait) from None
    await _end_previous(request)
    lifetime = timedelta(hours=services.settings.dashboard_session_hours)
    session_id = await run_in_threadpool(_open, services.database, found.key_id, utcnow(), lifetime)
    services.authenticator.vouch(_vouched_session(session_id), True)  # made here: valid
    return found, session_id


async def current_visitor(request: Request) -> Visitor:
    """The signed-in visitor, or SignedOut. A session ends by itself once its key is revoked or
    expires or its account is suspended (as the API's cache sees it, within seconds). An
    unknown session id counts as a failed key of the address (once: the answer deletes the
    cookie); from a blocked address, only the sessions this worker saw valid in the last hour
    are looked up (AddressBlocked for the others)."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        raise SignedOut()
    services = services_of(request)
    guard, authenticator = services.failed_auth, services.authenticator
    address = _address(request)
    vouched = _vouched_session(session_id)
    blocked = guard.blocked_for(address)
    if blocked is not None and not authenticator.vouches_for(vouched):
        raise AddressBlocked(blocked)
    engine = services.database
    now = utcnow()
    found = await run_in_threadpool(_find, engine, session_id, now)
    if found is None:
        authenticator.vouch(vouched, False)
        if block := await guard.record_failure(address):
            raise _signed_out(too_many_failures(block))
        raise SignedOut("Your session has ended; sign in again.")
    csrf_token, key_hash = found
    principal = await authenticator.lookup_hash(key_hash)
    refused = refusal_of(principal, now)
    authenticator.vouch(vouched, refused is None)
    if refused is not None:
        await run_in_threadpool(close, engine, session_id)
        raise _signed_out(refused, "Your session has ended.")
    assert principal is not None
    return Visitor(principal=principal, session_id=session_id, csrf_token=csrf_token)


async def admin_visitor(visitor: Annotated[Visitor, Depends(current_visitor)]) -> Visitor:
    if not visitor.principal.is_admin:
        detail = "These pages need a key with the 'admin' scope."
        raise Forbidden(detail, problems.ADMIN_SCOPE_REQUIRED)
    return visitor


async def form_with_token(
    request: Request, visitor: Annotated[Visitor, Depends(current_visitor)]
) -> FormData:
    """The POSTed form, once its csrf_token matches the session's."""
    form = await request.form()
    if not sessions.csrf_matches(visitor.csrf_token, form.get("csrf_token")):
        raise Forbidden(
            "This form has expired or did not come from this dashboard; reload the page and "
            "try again.",
            problems.CSRF_FAILED,
        )
    return form


async def checked_form(
    request: Request,
    visitor: Annotated[Visitor, Depends(current_visitor)],
    form: Annotated[FormData, Depends(form_with_token)],
) -> FormData:
    """The form of a change: its CSRF token checked, and counted as one of the key's dashboard
    writes (SAAS_DASHBOARD_WRITES_PER_KEY). Every form that changes something depends on this;
    signing out only on the token, so that a key over its limit can still sign out."""
    await _count_write(request, visitor.principal.key_id)
    return form


CurrentVisitor = Annotated[Visitor, Depends(current_visitor)]
AdminVisitor = Annotated[Visitor, Depends(admin_visitor)]
FormWithToken = Annotated[FormData, Depends(form_with_token)]
CheckedForm = Annotated[FormData, Depends(checked_form)]
