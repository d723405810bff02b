"""Moving time forward for the Redis limiter, whose clock (Redis's TIME) a test cannot set."""

import redis.asyncio as aioredis

from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import Window


async def age_buckets(
    client: aioredis.Redis,
    limiter: RedisLimiter,
    account_id: int,
    windows: tuple[Window, ...],
    seconds: float,
) -> int:
    """Move every sub-bucket of the account's windows `seconds` into the past, rounded to whole
    buckets (what the passing of that much time does); returns the buckets moved in the last."""
    shift = 0
    for window in windows:
        key = limiter.window_key(account_id, window)
        shift = round(seconds * 1_000_000 / window.bucket_micros)
        buckets = await client.hgetall(key)
        if not buckets:
            continue
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={int(index) - shift: units for index, units in buckets.items()})
            pipe.pexpire(key, window.micros // 1000 + 60_000)
            await pipe.execute()
    return shift
