"""Plan windows, headers and the in-process limiter (the embedded mode and the fallback)."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from saas.kit import months
from saas.ratelimit.headers import rate_limit_headers
from saas.ratelimit.memory_limiter import MemoryLimiter
from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import Decision, Window, parse_windows
from tests.ratelimit.buckets import age_buckets
from tests.support.stores import redis_url


def test_parse_windows_shortest_first():
    assert parse_windows("100/minute;5/second") == (
        Window("second", 5, 1),
        Window("minute", 100, 60),
    )
    assert parse_windows("3/2second") == (Window("2second", 3, 2),)
    assert parse_windows("1000/day")[0].seconds == 86400


def test_month_helpers():
    assert months.of(1767225599) == "2025-12"  # 2025-12-31 23:59:59 UTC
    assert months.of(1767225600) == "2026-01"
    assert months.seconds_to_end(1767225599) == 1


def test_memory_limiter_moving_window_and_headers():
    limiter = MemoryLimiter()
    windows = parse_windows("2/second;3/minute")

    async def scenario():
        first = await limiter.admit(1, windows, quota=None)
        second = await limiter.admit(1, windows, quota=None)
        third = await limiter.admit(1, windows, quota=None)  # over 2/second
        other = await limiter.admit(2, windows, quota=None)  # another account is untouched
        return first, second, third, other

    first, second, third, other = asyncio.run(scenario())
    assert first.admitted and second.admitted and other.admitted
    # One bucket (1/60 of the window) later at most than an exact window would say.
    assert third.outcome == "rate_limited" and 0 < third.retry_after <= 1 + 1 / 60
    headers = dict(rate_limit_headers(second))
    assert headers[b"x-ratelimit-limit"] == b"2" and headers[b"x-ratelimit-remaining"] == b"0"
    assert headers[b"ratelimit-policy"] == b'"second";q=2;w=1, "minute";q=3;w=60'
    # t: until the oldest counted bucket stops counting, just over the window: 1 s + 1/60 s.
    assert headers[b"ratelimit"].startswith(b'"second";r=0;t=2, "minute";r=1;t=')
    assert int(headers[b"x-ratelimit-reset"]) >= int(time.time())
    assert b"retry-after" not in headers
    # Whole seconds, never early: just over a second is 2.
    assert dict(rate_limit_headers(third))[b"retry-after"] == b"2"


def test_memory_limiter_quota_is_exact_and_refundable():
    limiter = MemoryLimiter()
    windows = parse_windows("1000/second")

    async def scenario():
        # A month the limiter has no count for is first seeded (from the ledger, in the app).
        unseeded = await limiter.admit(7, windows, quota=3)
        assert unseeded.quota_month is not None
        await limiter.seed(7, unseeded.quota_month, 0)
        decisions = [await limiter.admit(7, windows, quota=3) for _ in range(4)]
        assert decisions[0].quota_month is not None
        await limiter.refund(7, decisions[0].quota_month)
        return unseeded, decisions, await limiter.admit(7, windows, quota=3)

    unseeded, decisions, after_refund = asyncio.run(scenario())
    assert unseeded.outcome == "unseeded" and unseeded.windows == ()
    assert [d.outcome for d in decisions] == ["admitted"] * 3 + ["quota_exhausted"]
    assert [d.quota_remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after > 0
    assert after_refund.admitted


def test_memory_limiter_seed_counts_what_the_ledger_already_billed():
    limiter = MemoryLimiter()
    windows = parse_windows("1000/second")

    async def scenario():
        first = await limiter.admit(9, windows, quota=5)
        assert first.quota_month is not None
        await limiter.seed(9, first.quota_month, 4)
        await limiter.seed(9, first.quota_month, 0)  # a later seed never overwrites
        return [await limiter.admit(9, windows, quota=5) for _ in range(2)]

    assert [d.outcome for d in asyncio.run(scenario())] == ["admitted", "quota_exhausted"]


Admit = Callable[[], Awaitable[Decision]]
Advance = Callable[[float], Awaitable[None]]


async def slide(admit: Admit, advance: Advance) -> list[tuple[str, float]]:
    """3 per 2 seconds: two at t=0 and one at t=1 fill the window; at t=2.1 the first two have
    left it (two more fit), the one from t=1 has not (a third does not, for 0.9 s more)."""
    decisions = [await admit(), await admit()]
    await advance(1.0)
    decisions += [await admit(), await admit()]
    await advance(1.1)
    decisions += [await admit(), await admit(), await admit()]
    return [(d.outcome, round(d.retry_after, 1)) for d in decisions]


SLID = [
    ("admitted", 0.0),
    ("admitted", 0.0),
    ("admitted", 0.0),
    ("rate_limited", 1.0),
    ("admitted", 0.0),
    ("admitted", 0.0),
    ("rate_limited", 0.9),
]


def test_memory_window_slides_on_its_clock():
    now = [1_800_000_000.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    windows = parse_windows("3/2second")

    async def advance(seconds: float) -> None:
        now[0] += seconds

    assert asyncio.run(slide(lambda: limiter.admit(1, windows, quota=None), advance)) == SLID


def test_redis_window_slides_the_same():
    """The script reads Redis's own clock, which a test cannot move: it ages the stored
    admissions instead (every bucket moved back), which is what the passing of time does."""
    windows = parse_windows("3/2second")
    prefix = f"test-slide-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[tuple[str, float]]:
        client = aioredis.Redis.from_url(redis_url())
        limiter = RedisLimiter(client, prefix=prefix)

        async def advance(seconds: float) -> None:
            await age_buckets(client, limiter, 1, windows, seconds)

        try:
            return await slide(lambda: limiter.admit(1, windows, quota=None), advance)
        finally:
            keys = await client.keys(f"{prefix}:*")
            if keys:
                await client.delete(*keys)
            await client.aclose()

    # Redis's clock moves on between the calls too, and ages are whole buckets (1/60 of the
    # window): allow for a few hundredths of a second.
    got = asyncio.run(scenario())
    assert [outcome for outcome, _ in got] == [outcome for outcome, _ in SLID]
    assert all(abs(a - b) <= 0.1 for (_, a), (_, b) in zip(got, SLID, strict=True))
