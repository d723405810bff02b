"""Admission and metering, one step, for authenticated requests. In order, for a customer
request (/v1):

1. the model policy (saas/nlp/policy.py): the model, a batch's size and each text, judged before
   any counter moves (404, 403, 413, 400, with the rate-limit headers as they stand);
2. an `Idempotency-Key` (billable POSTs): a stored answer is replayed as one request of the rate
   limit, never of the quota; or this request holds the key while it runs (pipeline/idempotency);
3. admission: the plan's rate limits, and the monthly quota for billable routes (the route's
   Metering says which, and whether it costs one unit per text);
4. the route runs; its answer is held back, with the rate-limit headers added;
5. the usage event is committed, with the answer an Idempotency-Key keeps, before that answer is
   sent; if it cannot be committed the client gets 503 instead, and nothing is billed;
6. the quota of what is not billed is given back: all of it for an answer that is not 2xx or
   could not be billed, a batch's failed texts otherwise.

Every answer is one usage event (not billed unless 2xx and billable), except replays and the
Idempotency-Key's own refusals, which run nothing. Admin requests (/admin) get steps 3 and 4 with
a fixed limit of their own, never a plan's."""

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas import problems
from saas.auth.principal import Principal
from saas.idempotency import store
from saas.idempotency.store import Answer
from saas.nlp.policy import Policy, PolicyRefusal
from saas.pipeline.batch_body import read_body
from saas.pipeline.body_limit import BodyRefused
from saas.pipeline.idempotency import Claim, IdempotencyKeys, key_of, replay
from saas.pipeline.usage import HeldAnswer, Meter
from saas.problems import ProblemType
from saas.problems.responses import json_error
from saas.ratelimit.admission import Admission, LimiterUnavailable
from saas.ratelimit.headers import as_strings, primary_window, rate_limit_headers
from saas.ratelimit.windows import Decision, ceil_seconds
from saas.usage.recorder import UsageRecorder, UsageWriteFailed
from saas.web.context import Area, RequestContext, app_path, context_of


def without_retry_after(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Retry-After belongs to 429s (and 503s): a 404 or 413 does not go away by waiting."""
    return [(name, value) for name, value in headers if name != b"retry-after"]


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


def limiter_unavailable() -> Response:
    detail = "Rate limiting is temporarily unavailable; retry shortly."
    return json_error(problems.LIMITER_UNAVAILABLE, detail, {"Retry-After": "1"})


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        admission: Admission,
        policy: Policy,
        admin_rate_limit: str,
        recorder: UsageRecorder | None,
        idempotency: IdempotencyKeys | None,
    ) -> None:
        """`recorder`: None when SAAS_USAGE_METERING is off (then no events, and no
        Idempotency-Key either: its answers are stored with the events)."""
        self.app = app
        self.admission = admission
        self.policy = policy
        self.admin_rate_limit = admin_rate_limit
        self.recorder = recorder
        self.idempotency = idempotency if recorder is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = context_of(scope)
        principal = context.principal if context is not None else None
        if context is None or principal is None:
            await self.app(scope, receive, send)
        elif context.area is Area.admin:
            await self._admin(scope, receive, send, principal)
        else:
            await self._customer(scope, receive, send, context, principal)

    async def _admin(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal
    ) -> None:
        # A negative id keeps an admin key's counters apart from every account's.
        decision = await self._admit(
            principal, None, 1, subject=-principal.key_id, rate_limit=self.admin_rate_limit
        )
        if isinstance(decision, Response):
            await decision(scope, receive, send)
            return
        headers = rate_limit_headers(decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _customer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        context: RequestContext,
        principal: Principal,
    ) -> None:
        meter = Meter(context, principal)
        metering = context.metering

        async def refuse(
            problem: ProblemType,
            detail: str,
            fields: dict[str, Any],
            *,
            headers: Mapping[str, str] | None = None,
            blocked_first: bool = True,
        ) -> None:
            """An answer before admission: the rate-limit headers as they stand, counting
            nothing, and an event that is not billed. With `blocked_first`, an account this
            worker knows is rate limited gets that 429 instead, without asking Redis: refusals
            that count nothing must not cost a round trip each without bound."""
            blocked = self.admission.cached_rejection(principal.account_id, with_quota=False)
            if blocked_first and blocked is not None:
                await self._answer_unbilled(meter, rejection(blocked), scope, receive, send)
                return
            standing = await self._standing_headers(principal)
            all_headers = {**as_strings(standing), **(headers or {})}
            response = json_error(problem, detail, all_headers, **fields)
            await self._answer_unbilled(meter, response, scope, receive, send)

        # 1. The model policy, before anything is counted.
        model = self.policy.model(metering, context.named_model, principal)
        if isinstance(model, PolicyRefusal):
            context.model = model.model
            await refuse(model.problem, model.detail, model.fields)
            return
        context.model = model
        key = None
        if self.idempotency is not None and metering.billable and scope["method"] == "POST":
            key = key_of(scope["headers"])
        body = b""
        if metering.text_field is not None or key is not None:
            try:
                body, receive = await read_body(receive)
            except BodyRefused as exc:  # a chunked body over the limit, or too slow (408)
                # Its own answer (it may close the connection), whatever the account's state.
                await refuse(
                    exc.problem, exc.detail, exc.fields, headers=exc.headers, blocked_first=False
                )
                return
        cost = 1
        if metering.text_field is not None:
            priced = self.policy.cost(metering, principal, body)
            if isinstance(priced, PolicyRefusal):
                await refuse(priced.problem, priced.detail, priced.fields)
                return
            cost = priced

        # 2. An Idempotency-Key: a replay, a refusal, or the key's claim.
        claim: Claim | None = None
        if key is not None:
            assert self.idempotency is not None
            blocked = self.admission.cached_rejection(principal.account_id, with_quota=False)
            if blocked is not None:  # a replay would be refused too: no database read
                await self._answer_unbilled(meter, rejection(blocked), scope, receive, send, cost)
                return
            path = app_path(scope)  # the same request directly or through the proxy
            settled = await self.idempotency.settle(
                account_id=principal.account_id,
                key=key,
                fingerprint=store.fingerprint(scope["method"], path, scope["query_string"], body),
                request_id=context.request_id,
            )
            if isinstance(settled, Answer):  # one request of the rate limit, no quota
                answer = replay(settled)
                decided = await self._admit(principal, None, 1, unavailable=answer)
                if isinstance(decided, Decision):
                    answer.raw_headers.extend(rate_limit_headers(decided))
                    decided = answer
                await decided(scope, receive, send)
                return
            if isinstance(settled, Response):
                settled.raw_headers.extend(await self._standing_headers(principal))
                await settled(scope, receive, send)
                return
            claim = settled

        # 3-6, holding the key's claim until the quota is settled: whatever happens, the claim
        # ends (kept with a billed 2xx answer, released otherwise), and only after the refund.
        kept: Answer | None = None
        try:
            kept = await self._admit_and_run(
                scope, receive, send, context, principal, meter, cost, key
            )
        finally:
            if claim is not None:
                await claim.end(kept)

    async def _admit_and_run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        context: RequestContext,
        principal: Principal,
        meter: Meter,
        cost: int,
        key: str | None,
    ) -> Answer | None:
        """Admission, the route, its usage event before its answer, and the refund of what is
        not billed; the answer to keep for `key` (a billed 2xx), if any."""
        metering = context.metering
        quota = principal.monthly_quota if metering.billable else None
        decision = await self._admit(principal, quota, cost)
        if isinstance(decision, Response):
            await self._answer_unbilled(meter, decision, scope, receive, send, cost)
            return None

        held = HeldAnswer(rate_limit_headers(decision))
        answered = billed = False

        async def hold(message: Message) -> None:
            nonlocal answered, billed
            if not held.add(message):
                return
            answered = True
            billable = metering.billable and held.succeeded
            if self.recorder is not None:
                units = cost - context.failed_units
                event = meter.event(held.status, billable=billable, units=units)
                kept = meter.kept(event, key, held.answer()) if key and billable else None
                try:
                    await self.recorder.record(
                        event, durable=billable, watch=principal.quota_alerts, answer=kept
                    )
                except UsageWriteFailed:
                    detail = "Usage could not be recorded, so nothing was billed; retry shortly."
                    headers = {**as_strings(held.headers), "Retry-After": "1"}
                    await json_error(problems.USAGE_UNAVAILABLE, detail, headers)(
                        scope, receive, send
                    )
                    return
            billed = billable
            await held.send(send)

        try:
            await self.app(scope, receive, hold)
        finally:
            try:
                if self.recorder is not None and not answered:  # failed before answering
                    event = meter.event(held.status, billable=False, units=cost)
                    await self.recorder.record(event, durable=False)
            finally:
                unbilled = context.failed_units if billed else cost
                if decision.quota_month is not None and unbilled:
                    await self.admission.refund(principal.account_id, decision, unbilled)
        return held.answer() if billed and key is not None else None

    async def _admit(
        self,
        principal: Principal,
        quota: int | None,
        cost: int,
        *,
        subject: int | None = None,
        rate_limit: str | None = None,
        unavailable: Response | None = None,
    ) -> Decision | Response:
        """The admitting decision, or the answer refusing it: 429, 402, or without the limiter
        `unavailable` (503 by default). `subject` and `rate_limit`: the principal's account and
        plan unless given."""
        subject = principal.account_id if subject is None else subject
        rate_limit = rate_limit or principal.rate_limit
        cached = self.admission.cached_rejection(subject, quota is not None, cost)
        if cached is not None:
            return rejection(cached, quota)
        try:
            decision = await self.admission.admit(subject, rate_limit, quota=quota, cost=cost)
        except LimiterUnavailable:
            return unavailable or limiter_unavailable()
        return decision if decision.admitted else rejection(decision, quota)

    async def _standing_headers(self, principal: Principal) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers as they stand, counting nothing (without Retry-After)."""
        peeked = await self.admission.peek(principal.account_id, principal.rate_limit)
        return without_retry_after(rate_limit_headers(peeked)) if peeked is not None else []

    async def _answer_unbilled(
        self,
        meter: Meter,
        response: Response,
        scope: Scope,
        receive: Receive,
        send: Send,
        cost: int = 1,
    ) -> None:
        """An answer that ran nothing, as an event that is not billed."""
        if self.recorder is not None:
            event = meter.event(response.status_code, billable=False, units=cost)
            await self.recorder.record(event, durable=False)
        await response(scope, receive, send)
