"""Admission of authenticated requests. Customer requests (/v1): the plan's rate limits for
every request, the monthly quota for billable ones. Admin requests (/admin): a fixed limit of
their own. Adds the rate-limit headers to every answer, and gives back the reserved quota when
the answer is not 2xx (only successful requests are billed). A batch request costs one unit per
text (see batch_body.py); one larger than the plan allows is refused with 413 before any counter
moves."""

from dataclasses import replace

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.errors import json_error
from saas.middleware.auth import app_path
from saas.middleware.batch_body import count_texts, read_body
from saas.middleware.body_limit import BodyTooLarge
from saas.nlp.tasks import batch_too_large, is_batch, is_billable
from saas.ratelimit.admission import Admission, LimiterUnavailable
from saas.ratelimit.headers import rate_limit_headers
from saas.ratelimit.windows import Decision, ceil_seconds

CUSTOMER_PREFIX = "/v1/"
ADMIN_PREFIX = "/admin/"


def rejection(decision: Decision):  # type: ignore[no-untyped-def]
    headers = dict((k.decode(), v.decode()) for k, v in rate_limit_headers(decision))
    if decision.outcome == "rate_limited":
        wait = max(1, ceil_seconds(decision.retry_after))
        detail = f"Rate limit exceeded; retry in {wait} s."
        return json_error(429, detail, headers)
    return json_error(
        402,
        "Monthly quota exhausted: upgrade your plan or wait for the next month (UTC).",
        headers,
    )


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, admission: Admission, admin_rate_limit: str) -> None:
        self.app = app
        self.admission = admission
        self.admin_rate_limit = admin_rate_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        path = app_path(scope) if principal is not None else ""
        if principal is not None and path.startswith(ADMIN_PREFIX):
            # Admin routes have their own fixed limit per admin key, never the plan's. A negative
            # id keeps its counters apart from every account's.
            principal = replace(
                principal,
                account_id=-principal.key_id,
                rate_limit=self.admin_rate_limit,
                monthly_quota=None,
            )
        elif principal is None or not path.startswith(CUSTOMER_PREFIX):
            await self.app(scope, receive, send)
            return

        billable = is_billable(scope["method"], path)
        cost = 1
        if is_batch(scope["method"], path):
            try:
                body, receive = await read_body(receive)
            except BodyTooLarge as exc:  # a chunked body over the limit, found while reading
                await json_error(413, exc.detail)(scope, receive, send)
                return
            # Not JSON, or no list of texts: cost 1, and the route answers 422.
            count = count_texts(body)
            if count is not None and count > principal.batch_limit:
                await json_error(413, batch_too_large(principal, count))(scope, receive, send)
                return
            cost = max(1, count or 0)  # an empty list is still a request (the route says 422)

        cached = self.admission.cached_rejection(principal.account_id, billable, cost)
        if cached is not None:
            await rejection(cached)(scope, receive, send)
            return
        try:
            decision = await self.admission.admit(principal, billable=billable, cost=cost)
        except LimiterUnavailable:
            detail = "Rate limiting is temporarily unavailable; retry shortly."
            await json_error(503, detail, {"Retry-After": "1"})(scope, receive, send)
            return
        if not decision.admitted:
            await rejection(decision)(scope, receive, send)
            return

        headers = rate_limit_headers(decision)
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            billed = 200 <= status < 300 and not scope["state"].get("billing_failed")
            if decision.quota_month is not None and not billed:
                await self.admission.refund(principal.account_id, decision, cost)
