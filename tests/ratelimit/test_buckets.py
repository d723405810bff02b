"""The limiter's sub-bucket windows (admit.lua, memory_limiter.py): never more than the limit in
any interval of a window's length, refused at most one bucket (1/BUCKETS of the window) early,
Retry-After exactly when enough of the oldest counted buckets stop counting, and state whose
size depends on neither the limit nor the cost of a request."""

import asyncio
import math
import random
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import cast

import redis
import redis.asyncio as aioredis

from saas.ratelimit.memory_limiter import MemoryLimiter
from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import BUCKETS, Decision, Window, parse_windows
from tests.ratelimit.buckets import age_buckets
from tests.support.stores import redis_url


@dataclass(frozen=True, slots=True)
class Call:
    now_us: int
    cost: int
    admitted: bool
    retry_us: int


def record(decision: Decision, cost: int) -> Call:
    assert decision.outcome in ("admitted", "rate_limited"), decision
    return Call(
        round(decision.now * 1e6), cost, decision.admitted, round(decision.retry_after * 1e6)
    )


def check(calls: list[Call], windows: tuple[Window, ...]) -> tuple[int, int]:
    """The guarantees, from the log of decisions alone; returns (units admitted, refusals)."""
    admitted = sorted((c.now_us, c.cost) for c in calls if c.admitted)
    times = [t for t, _ in admitted]
    units = [0, *accumulate(cost for _, cost in admitted)]

    def used(after: int, upto: int) -> int:
        """Units admitted at times in (after, upto]."""
        return units[bisect_right(times, upto)] - units[bisect_right(times, after)]

    def counted(at: int, window: Window, seen_upto: int) -> int:
        """What the bucket rule counts at `at` of the admissions made by `seen_upto`."""
        width = window.bucket_micros
        first_start = (at - window.micros) // width * width
        return used(first_start - 1, seen_upto)

    for window in windows:
        # Exact in this direction: any interval of the window's length holds at most the limit
        # (the fullest such interval ends at an admission).
        for t in times:
            assert used(t - window.micros, t) <= window.limit, (window, t)

    refused = [c for c in calls if not c.admitted]
    for call in refused:
        t, r = call.now_us, call.retry_us
        assert r > 0
        # Refused early by at most one bucket: even counted exactly over the window made one
        # bucket longer, the request did not fit in some window.
        assert any(
            used(t - w.micros - w.bucket_micros, t) + call.cost > w.limit for w in windows
        ), call
        # Retry-After is the first moment the same request fits, given what was admitted by t.
        assert all(counted(t + r, w, t) + call.cost <= w.limit for w in windows), call
        assert any(counted(t + r - 1, w, t) + call.cost > w.limit for w in windows), call
        # ...never before an exact moving window would admit it, at most one bucket after.
        exact = 0
        for w in windows:
            need = used(t - w.micros, t) + call.cost - w.limit
            if need > 0:
                start = bisect_right(times, t - w.micros)
                index = next(
                    i for i in range(start, len(times)) if units[i + 1] - units[start] >= need
                )
                exact = max(exact, times[index] + w.micros - t)
        assert exact <= r <= exact + max(w.bucket_micros for w in windows), (call, exact)
    return units[-1], len(refused)


def test_memory_limiter_keeps_the_guarantees_under_random_load():
    windows = parse_windows("20/second;45/3second")
    clock = [1_800_000_000_123_456]
    limiter = MemoryLimiter(clock=lambda: clock[0] / 1e6)
    rng = random.Random(13)

    async def run() -> list[Call]:
        calls = []
        for _ in range(4000):
            clock[0] += int(rng.expovariate(1 / 15_000))  # about 67 calls a second
            cost = rng.choice((1, 1, 1, 2, 5))
            calls.append(record(await limiter.admit(1, windows, quota=None, cost=cost), cost))
        return calls

    admitted, refused = check(asyncio.run(run()), windows)
    assert admitted > 500 and refused > 500  # both sides of the limit were exercised


def test_memory_limiter_admits_exactly_at_retry_after():
    windows = parse_windows("3/minute")
    clock = [1_800_000_000_400_000]  # 0.4 s into a bucket (1 s wide for a minute)
    limiter = MemoryLimiter(clock=lambda: clock[0] / 1e6)

    async def admit() -> Decision:
        return await limiter.admit(1, windows, quota=None)

    async def scenario() -> None:
        assert all([(await admit()).admitted for _ in range(3)])
        refused = await admit()
        # Exact would say 60 s; the oldest bucket is counted in full until it has left: 60.6 s.
        assert refused.retry_after == 60.6
        assert refused.windows[0].reset == 60.6 and refused.windows[0].remaining == 0
        clock[0] += 60_600_000 - 1
        assert not (await admit()).admitted
        clock[0] += 1
        assert (await admit()).admitted

    asyncio.run(scenario())


def test_redis_keeps_the_guarantees_under_concurrent_load():
    """Eight connections admit as fast as they can for 3.5 s of Redis's clock."""
    windows = parse_windows("25/second;60/3second")
    prefix = f"test-buckets-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[Call]:
        client = aioredis.Redis.from_url(redis_url(), max_connections=8)
        limiter = RedisLimiter(client, prefix=prefix)
        calls: list[Call] = []
        try:
            first = await limiter.admit(1, windows, quota=None)
            calls.append(record(first, 1))
            start = first.now

            async def hammer(seed: int) -> None:
                rng = random.Random(seed)
                while True:
                    cost = rng.choice((1, 1, 1, 2, 5))
                    decision = await limiter.admit(1, windows, quota=None, cost=cost)
                    calls.append(record(decision, cost))
                    if decision.now - start > 3.5:
                        return

            await asyncio.gather(*(hammer(seed) for seed in range(8)))
        finally:
            keys = await client.keys(f"{prefix}:*")
            if keys:
                await client.delete(*keys)
            await client.aclose()
        return calls

    calls = asyncio.run(scenario())
    admitted, refused = check(calls, windows)
    assert admitted >= 60 and refused > 100  # both sides of the limit were exercised


def _memory_usage(client: redis.Redis, prefix: str, account_id: int) -> dict[str, int]:
    keys = cast(list[bytes], client.keys(f"{prefix}:*{{acct_{account_id}}}*"))  # no decoding
    return {key.decode(): int(client.memory_usage(key, samples=0) or 0) for key in keys}


def test_redis_state_is_at_most_4kb_per_window_at_any_limit():
    """2,000 requests on 100000/minute, first at once, then spread over every bucket (the
    largest the state gets); 1,000,000/day alongside. MEMORY USAGE of the account's keys."""
    windows = parse_windows("100000/minute;1000000/day")
    prefix = f"test-buckets-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(redis_url())

    async def admit_2000(account_id: int, spread: bool) -> None:
        client = aioredis.Redis.from_url(redis_url())
        limiter = RedisLimiter(client, prefix=prefix)
        try:
            decision = await limiter.admit(account_id, windows, quota=10**9)
            assert decision.outcome == "unseeded" and decision.quota_month
            await limiter.seed(account_id, decision.quota_month, 0)
            for index in range(2000):
                assert (await limiter.admit(account_id, windows, quota=10**9)).admitted
                if spread and index % 30 == 29:
                    # A minute's buckets are a second wide: move every bucket one back.
                    await age_buckets(client, limiter, account_id, windows[:1], 1.0)
        finally:
            await client.aclose()

    try:
        for account_id, spread in ((1, False), (2, True)):
            started = time.monotonic()
            asyncio.run(admit_2000(account_id, spread))
            seconds = time.monotonic() - started
            usage = _memory_usage(sync, prefix, account_id)
            window_keys = [key for key in usage if ":rl:" in key]
            assert len(window_keys) == 2, usage
            assert sum(usage.values()) <= 4096 * len(windows), usage
            assert all(usage[key] <= 4096 for key in window_keys), usage
            minute = next(key for key in window_keys if key.endswith(f":60:b{BUCKETS}"))
            fields = sync.hlen(minute)
            # At once: one bucket per second started meanwhile (one or two, unless the machine
            # is busy). Spread: 66 seconds' worth of buckets, of which the window holds
            # BUCKETS + 1 (the rest have left it).
            at_once = fields <= math.ceil(seconds) + 1
            assert BUCKETS <= fields <= BUCKETS + 1 if spread else at_once, (fields, seconds)
    finally:
        keys = sync.keys(f"{prefix}:*")
        if keys:
            sync.delete(*keys)
        sync.close()


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }


def test_a_batch_costs_the_redis_commands_of_one_request(own_redis):
    """Counted by Redis itself (INFO commandstats counts the commands a script runs), on a Redis
    of the test's own so that nothing else is counted."""
    windows = parse_windows("50/second;1000/minute")
    sync = redis.Redis.from_url(own_redis.url)

    async def admit(account_id: int, cost: int) -> dict[str, int]:
        client = aioredis.Redis.from_url(own_redis.url)
        limiter = RedisLimiter(client, prefix="p")
        await limiter.load_scripts()
        first = await limiter.admit(account_id, windows, quota=10**6)
        assert first.quota_month is not None
        await limiter.seed(account_id, first.quota_month, 0)
        await limiter.admit(account_id, windows, quota=10**6)  # the windows hold a bucket
        sync.config_resetstat()
        assert (await limiter.admit(account_id, windows, quota=10**6, cost=cost)).admitted
        await client.aclose()
        return _commands(sync)

    try:
        single = asyncio.run(admit(1, 1))
        batch = asyncio.run(admit(2, 32))
    finally:
        sync.close()
    assert single == batch, (single, batch)
    assert single["evalsha"] == 1
    assert single["hincrby"] == len(windows) + 1
    # EVALSHA, TIME, the quota's HEXISTS, HGET, HINCRBY and EXPIRE; per window HGETALL, HINCRBY
    # and PEXPIRE (HDEL too once a bucket has left a window).
    assert sum(single.values()) == 6 + 3 * len(windows), single
