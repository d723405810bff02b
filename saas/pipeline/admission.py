"""Admission of authenticated requests. Customer requests (/v1): the plan's rate limits for
every request, the monthly quota for billable ones (the route's Metering says which, and whether
it costs one unit per text). Admin requests (/admin): a fixed limit of their own. Adds the
rate-limit headers to every answer, and gives back the reserved quota when the answer is not
2xx or its usage could not be committed (only what is billed uses quota), and that of the texts of
a 2xx batch that failed (RequestContext.failed_units). A batch for a model the service does not
run (404) or the plan does not include (403), or larger than the plan allows (413), is refused
before any counter moves, with the rate-limit headers as they stand."""

from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas import problems
from saas.auth.principal import Principal
from saas.nlp.tasks import batch_too_large, model_not_in_plan, unknown_model
from saas.pipeline.batch_body import count_texts, read_body
from saas.pipeline.body_limit import BodyRefused
from saas.problems import ProblemType
from saas.problems.responses import json_error
from saas.ratelimit.admission import Admission, LimiterUnavailable
from saas.ratelimit.headers import as_strings, primary_window, rate_limit_headers
from saas.ratelimit.windows import Decision, ceil_seconds
from saas.web.context import Area, RequestContext, context_of

# A request refused before admission: its problem, `detail` and the problem's fields.
Refusal = tuple[ProblemType, str, dict[str, Any]]


def without_retry_after(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Retry-After belongs to 429s (and 503s): a 404 or 413 does not go away by waiting."""
    return [(name, value) for name, value in headers if name != b"retry-after"]


async def standing_headers(
    admission: Admission, account_id: int, rate_limit: str
) -> list[tuple[bytes, bytes]]:
    """The rate-limit headers as they stand, counting nothing: for an authenticated answer
    refused before admission (without Retry-After)."""
    peeked = await admission.peek(account_id, rate_limit)
    return without_retry_after(rate_limit_headers(peeked)) if peeked is not None else []


def model_refusal(context: RequestContext, principal: Principal) -> Refusal | None:
    """404 for a model the URL names that the service does not run, 403 for one the plan
    does not include (the route says the same, for requests that get that far)."""
    if context.named_model is not None and context.model is None:
        return problems.MODEL_NOT_FOUND, unknown_model(context.named_model), {}
    if context.model is not None and not principal.may_use_model(context.model):
        return problems.MODEL_NOT_IN_PLAN, model_not_in_plan(context.model), {}
    return None


def rejection(decision: Decision, quota: int | None = None) -> Response:
    """The 429 or 402 for a refused decision; `quota`: the monthly quota it was checked against,
    the `limit` of a 402."""
    headers = as_strings(rate_limit_headers(decision))
    if decision.outcome == "rate_limited":
        wait = max(1, ceil_seconds(decision.retry_after))
        detail = f"Rate limit exceeded; retry in {wait} s."
        # The window the X-RateLimit-* headers speak for: the one closest to running out.
        limit = {"limit": primary_window(decision).window.limit} if decision.windows else {}
        return json_error(problems.RATE_LIMITED, detail, headers, **limit)
    fields = {} if quota is None else {"limit": quota}
    detail = "Monthly quota exhausted: upgrade your plan or wait for the next month (UTC)."
    return json_error(problems.QUOTA_EXHAUSTED, detail, headers, **fields)


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
            # Who may not use the model learns that first, whatever the body holds.
            refusal = model_refusal(context, principal)
            closing: dict[str, str] = {}
            if refusal is None:
                try:
                    body, receive = await read_body(receive)
                except BodyRefused as exc:  # a chunked body over the limit, or too slow (408)
                    refusal = exc.problem, exc.detail, exc.fields
                    closing = dict(exc.headers or {})
                else:
                    # Not JSON, or no list of texts: cost 1, and the route answers 422.
                    count = count_texts(body)
                    if count is not None and count > principal.batch_limit:
                        limit = principal.batch_limit
                        detail = batch_too_large(principal, count)
                        refusal = problems.BATCH_TOO_LARGE, detail, {"limit": limit}
                    context.cost = max(1, count or 0)  # an empty list is still a request (422)
            if refusal is not None:
                problem, detail, fields = refusal
                context.rate_limit_headers = await standing_headers(
                    self.admission, subject, rate_limit
                )
                headers_out = {**as_strings(context.rate_limit_headers), **closing}
                await json_error(problem, detail, headers_out, **fields)(scope, receive, send)
                return
        cost = context.cost

        cached = self.admission.cached_rejection(subject, quota is not None, cost)
        if cached is not None:
            await rejection(cached, quota)(scope, receive, send)
            return
        try:
            decision = await self.admission.admit(subject, rate_limit, quota=quota, cost=cost)
        except LimiterUnavailable:
            detail = "Rate limiting is temporarily unavailable; retry shortly."
            unavailable = json_error(problems.LIMITER_UNAVAILABLE, detail, {"Retry-After": "1"})
            await unavailable(scope, receive, send)
            return
        if not decision.admitted:
            await rejection(decision, quota)(scope, receive, send)
            return

        headers = context.rate_limit_headers = rate_limit_headers(decision)
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
