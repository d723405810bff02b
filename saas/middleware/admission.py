"""Admission of authenticated requests. Customer requests (/v1): the plan's rate limits for
every request, the monthly quota for billable ones (the route's Metering says which, and whether
it costs one unit per text). Admin requests (/admin): a fixed limit of their own. Adds the
rate-limit headers to every answer, and gives back the reserved quota when the answer is not
2xx or its usage could not be committed (only what is billed uses quota), and that of the texts of
a 2xx batch that failed (RequestContext.failed_units). A batch larger than the plan allows is
refused with 413 before any counter moves."""

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.context import Area, context_of
from saas.middleware.batch_body import count_texts, read_body
from saas.middleware.body_limit import BodyTooLarge
from saas.nlp.tasks import batch_too_large
from saas.ratelimit.admission import Admission, LimiterUnavailable
from saas.ratelimit.headers import rate_limit_headers
from saas.ratelimit.windows import Decision, ceil_seconds
from saas.responses import json_error


def rejection(decision: Decision) -> Response:
    headers = {k.decode(): v.decode() for k, v in rate_limit_headers(decision)}
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
        context = context_of(scope)
        principal = context.principal if context is not None else None
        if context is None or principal is None:
            await self.app(scope, receive, send)
            return
        if context.area is Area.admin:
            # Admin routes have their own fixed limit per admin key, never the plan's. A negative
            # id keeps its counters apart from every account's.
            subject, rate_limit, quota = -principal.key_id, self.admin_rate_limit, None
        else:
            subject, rate_limit = principal.account_id, principal.rate_limit
            quota = principal.monthly_quota if context.metering.billable else None

        if context.metering.per_text:
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
            context.cost = max(1, count or 0)  # an empty list is still a request (422)
        cost = context.cost

        cached = self.admission.cached_rejection(subject, quota is not None, cost)
        if cached is not None:
            await rejection(cached)(scope, receive, send)
            return
        try:
            decision = await self.admission.admit(subject, rate_limit, quota=quota, cost=cost)
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
            billed = 200 <= status < 300 and not context.billing_failed
            unbilled = context.failed_units if billed else cost
            if decision.quota_month is not None and unbilled:
                await self.admission.refund(subject, decision, unbilled)
