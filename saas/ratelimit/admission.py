"""Admission of a customer request: the plan's moving windows and monthly quota.

Redis (when configured) is asked once per admitted request. Rejections are remembered locally
until they lapse, so an account over its limit costs this worker no Redis call. When Redis cannot
be reached, SAAS_LIMITER_FAIL_OPEN decides: fall back to this worker's own in-memory limiter
(logged and counted), or refuse with 503. The local cache only ever rejects; it never admits
beyond the shared count.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from cachetools import TLRUCache

from saas.kit import metrics, redis_client
from saas.ratelimit.memory_limiter import MemoryLimiter
from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import Decision, Window, parse_windows

log = structlog.get_logger(__name__)

# After a failed Redis call, go straight to the fallback for this long instead of making every
# request wait for another timeout.
REDIS_RETRY_SECONDS = 1.0
# Timeouts in a row that count as Redis being down (one may just be a busy event loop).
TIMEOUTS_BEFORE_BREAKING = 3
# A quota rejection is remembered briefly only: refunds of failed requests can free quota.
QUOTA_BLOCK_SECONDS = 2.0


class LimiterUnavailable(Exception):
    """Redis is unreachable and the limiter fails closed."""


@dataclass(frozen=True, slots=True)
class _Block:
    decision: Decision
    decided_at: float  # monotonic
    until: float  # monotonic
    # Units the rejected request asked for: a smaller request (one text after a refused batch)
    # may still fit, so only requests of at least this cost are refused from memory.
    cost: int = 1


def count_outcome(decision: Decision, *, fallback: bool) -> None:
    if decision.admitted:
        (metrics.FAIL_OPEN if fallback else metrics.ADMITTED).inc()
    elif decision.outcome == "rate_limited":
        metrics.RATE_LIMITED.inc()
    elif decision.outcome == "quota_exhausted":
        metrics.QUOTA_EXHAUSTED.inc()


class Admission:
    def __init__(
        self,
        *,
        fail_open: bool,
        redis_timeout: float = 0.25,
        quota_used: Callable[[int, str], Awaitable[int]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.fail_open = fail_open
        # Clocks a test can replace: the breaker's pause and cached rejections run on
        # `monotonic`; the in-process limiter's windows on `wall_clock`.
        self.monotonic = monotonic
        # The ledger's billable count for (account, month): seeds a limiter that lost its count.
        self.quota_used = quota_used
        self.redis_timeout = redis_timeout
        self.shared: RedisLimiter | None = None
        self.local = MemoryLimiter(clock=wall_clock)
        self._redis_down_until = 0.0
        self._timeouts_in_a_row = 0
        self._blocked: TLRUCache[tuple[str, int], _Block] = TLRUCache(
            maxsize=100_000, ttu=lambda _key, block, _now: block.until, timer=monotonic
        )

    def use_redis(self, redis: redis_client.Client, prefix: str) -> None:
        self.shared = RedisLimiter(redis, prefix=prefix)

    async def warm_up(self) -> None:
        """Load the scripts and open a connection before the first request needs them."""
        if self.shared is None:
            return
        try:
            await asyncio.wait_for(self.shared.load_scripts(), 5.0)
        except redis_client.ERRORS as exc:
            metrics.REDIS_ERRORS_LIMITER.inc()
            log.error("limiter_redis_unavailable_at_start", error=type(exc).__name__)

    def cached_rejection(self, account_id: int, with_quota: bool, cost: int = 1) -> Decision | None:
        """A remembered rejection that still applies to a request of this cost, or None."""
        kinds = ("rate", "quota") if with_quota else ("rate",)
        for kind in kinds:
            block = self._blocked.get((kind, account_id))
            if block is not None and cost >= block.cost:
                count_outcome(block.decision, fallback=False)
                return block.decision.aged(self.monotonic() - block.decided_at)
        return None

    async def admit(
        self, account_id: int, rate_limit: str, *, quota: int | None, cost: int = 1
    ) -> Decision:
        """Check and count `cost` units against the windows of `rate_limit` and, unless `quota`
        is None (not billable, or no quota), against the month's quota."""
        windows = parse_windows(rate_limit)
        decision = await self._decide(account_id, windows, quota, cost)
        # Seeded where it was decided; once more if Redis failed meanwhile (then in memory).
        for _ in range(2):
            if decision.outcome != "unseeded":
                break
            assert decision.quota_month is not None
            used = 0
            if self.quota_used is not None:
                try:
                    used = await self.quota_used(account_id, decision.quota_month)
                except Exception as exc:  # noqa: BLE001 - whatever the ledger's failure, 503
                    # The database is unreachable (Redis lost its counts meanwhile, or this
                    # worker's memory never had them): the month's use is unknown, and the
                    # request could not be billed anyway. Was a 500 (tests/e2e/test_faults.py).
                    metrics.LIMITER_UNAVAILABLE.inc()
                    log.error("quota_count_unavailable", error=type(exc).__name__)
                    raise LimiterUnavailable from exc
            limiter: RedisLimiter | MemoryLimiter = (
                self.shared if decision.shared and self.shared else self.local
            )
            try:
                await limiter.seed(account_id, decision.quota_month, used)
            except redis_client.ERRORS as exc:
                metrics.REDIS_ERRORS_LIMITER.inc()
                self._break(type(exc).__name__)
            decision = await self._decide(account_id, windows, quota, cost)
        if not decision.admitted:
            self._remember_rejection(account_id, decision, cost)
        # Decided by this worker's memory although Redis is configured: failing open.
        count_outcome(decision, fallback=self.shared is not None and not decision.shared)
        return decision

    async def peek(self, account_id: int, rate_limit: str) -> Decision | None:
        """The rate-limit windows as they stand, counting nothing: the headers of an answer
        refused before admission (a batch over the plan's size...). None when the limiter
        cannot say (Redis down and failing closed)."""
        try:
            return await self._decide(account_id, parse_windows(rate_limit), None, 0, read=True)
        except LimiterUnavailable:
            return None

    async def refund(self, account_id: int, decision: Decision, cost: int = 1) -> None:
        """Give back the quota a request reserved when it did not end 2xx."""
        if decision.quota_month is None:
            return
        if not decision.shared or self.shared is None:
            await self.local.refund(account_id, decision.quota_month, cost)
            return
        try:
            await asyncio.wait_for(
                self.shared.refund(account_id, decision.quota_month, cost), self.redis_timeout
            )
        except redis_client.ERRORS:
            metrics.REDIS_ERRORS_LIMITER.inc()
            log.warning("quota_refund_failed", account_id=account_id, month=decision.quota_month)

    async def _decide(
        self,
        account_id: int,
        windows: tuple[Window, ...],
        quota: int | None,
        cost: int,
        *,
        read: bool = False,  # a peek: no admission to count or log when Redis is away
    ) -> Decision:
        if self.shared is None:
            return await self.local.admit(account_id, windows, quota=quota, cost=cost)
        if self.monotonic() >= self._redis_down_until:
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own.
                async with asyncio.timeout(self.redis_timeout):
                    decision = await self.shared.admit(account_id, windows, quota=quota, cost=cost)
                self._timeouts_in_a_row = 0
                return decision
            except TimeoutError:
                # Slow is not down: a busy event loop also makes calls late. Only several
                # timeouts in a row open the breaker; this request alone takes the fallback.
                metrics.REDIS_ERRORS_LIMITER.inc()
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row >= TIMEOUTS_BEFORE_BREAKING:
                    self._break("TimeoutError")
            except redis_client.ERRORS as exc:
                metrics.REDIS_ERRORS_LIMITER.inc()
                self._break(type(exc).__name__)
        if not self.fail_open:
            if not read:
                metrics.LIMITER_UNAVAILABLE.inc()
            raise LimiterUnavailable
        if not read:
            log.warning("limiter_fail_open", account_id=account_id)
        return await self.local.admit(account_id, windows, quota=quota, cost=cost)

    def _break(self, error: str) -> None:
        self._redis_down_until = self.monotonic() + REDIS_RETRY_SECONDS
        self._timeouts_in_a_row = 0
        log.error("limiter_redis_unavailable", error=error, retry_in=REDIS_RETRY_SECONDS)

    def _remember_rejection(self, account_id: int, decision: Decision, cost: int) -> None:
        now = self.monotonic()
        if decision.outcome == "rate_limited":
            key, lasts = ("rate", account_id), decision.retry_after
        else:
            key, lasts = ("quota", account_id), min(decision.retry_after, QUOTA_BLOCK_SECONDS)
        # Replacing a live block (normally one of a larger cost, which this request passed) is
        # safe: the cache only ever saves a limiter call, it never admits anything.
        self._blocked[key] = _Block(decision, now, now + lasts, cost)

    def forget_all(self) -> None:
        self._blocked.clear()

    def forget(self, account_id: int) -> None:
        """Drop cached rejections, e.g. after the account's plan changed."""
        self._blocked.pop(("rate", account_id), None)
        self._blocked.pop(("quota", account_id), None)
