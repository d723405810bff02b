"""Moving windows and monthly quotas shared by every worker and host through one Redis.

Hand-written Lua rather than the `limits` library: `limits` checks one window per call, and a
plan's windows plus its quota must be checked and counted together, atomically, in one round
trip (see admit.lua). Keys carry the account as a hash tag so the script runs on Redis Cluster.

Each window is a hash of at most BUCKETS + 1 sub-bucket counters (a few hundred bytes whatever
the limit); its key names BUCKETS, so a change of it (or the sorted sets of earlier versions)
starts from fresh keys instead of misreading old ones.
"""

from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from saas.kit import months, redis_client
from saas.ratelimit.pipelining import ScriptPipeline
from saas.ratelimit.windows import BUCKETS, Decision, Outcome, Window, WindowState

_ADMIT = files("saas.ratelimit").joinpath("admit.lua").read_text()
_REFUND = """
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local back = math.min(used, tonumber(ARGV[2]))
if back > 0 then return redis.call('HINCRBY', KEYS[1], ARGV[1], -back) end
return used
"""
_OUTCOMES: tuple[Outcome, ...] = ("admitted", "rate_limited", "quota_exhausted", "unseeded")


class RedisLimiter:
    def __init__(self, redis: redis_client.Client, *, prefix: str) -> None:
        self.prefix = prefix
        self.redis = redis
        self._admit = redis.register_script(_ADMIT)
        self._refund = redis.register_script(_REFUND)
        # One node: the admissions of concurrent requests share a round trip (pipelining.py).
        self._pipeline = ScriptPipeline(redis, _ADMIT) if isinstance(redis, Redis) else None

    async def load_scripts(self) -> None:
        """Without this the first call per connection pays NOSCRIPT, SCRIPT LOAD and a retry."""
        if self._pipeline is not None:
            await self._pipeline.load()
        else:
            await self.redis.script_load(_ADMIT)
        await self.redis.script_load(_REFUND)

    async def _run_admit(self, keys: list[str], args: list[int]) -> list[Any]:
        if self._pipeline is not None:
            raw: list[Any] = await self._pipeline.call(keys, args)
            return raw
        return await self._admit(keys=keys, args=args)  # type: ignore[no-any-return]

    def window_key(self, account_id: int, window: Window) -> str:
        return f"{self.prefix}:rl:{{acct_{account_id}}}:{window.seconds}:b{BUCKETS}"

    def _quota_key(self, account_id: int) -> str:
        return f"{self.prefix}:q:{{acct_{account_id}}}"

    async def admit(
        self,
        account_id: int,
        windows: tuple[Window, ...],
        *,
        quota: int | None,
        cost: int = 1,
    ) -> Decision:
        keys = [self.window_key(account_id, window) for window in windows]
        keys.append(self._quota_key(account_id))
        args: list[int] = [cost, -1 if quota is None else quota]
        for window in windows:
            args += [window.limit, window.micros, window.bucket_micros]
        raw = await self._run_admit(keys, args)
        outcome = _OUTCOMES[int(raw[0])]
        now = int(raw[1]) / 1e6
        month = raw[3].decode() if isinstance(raw[3], bytes) else str(raw[3])
        if outcome == "unseeded":
            return Decision(outcome, (), 0.0, now, quota_month=month, shared=True)
        used = int(raw[4])
        states = []
        for index, window in enumerate(windows):
            count, reset_us = int(raw[5 + 2 * index]), int(raw[6 + 2 * index])
            states.append(
                WindowState(window, max(0, window.limit - count), max(0.0, reset_us / 1e6))
            )
        retry_after = int(raw[2]) / 1e6
        if outcome == "quota_exhausted":
            retry_after = months.seconds_to_end(now)
        reserved = outcome == "admitted" and quota is not None
        return Decision(
            outcome,
            tuple(states),
            retry_after,
            now,
            quota_month=month if reserved else None,
            quota_remaining=None if quota is None else max(0, quota - used),
            shared=True,
        )

    async def seed(self, account_id: int, month: str, used: int) -> None:
        """The month's billable count from the ledger, unless another worker set it first."""
        await self.redis.hsetnx(self._quota_key(account_id), month, used)

    async def refund(self, account_id: int, month: str, cost: int = 1) -> None:
        await self._refund(keys=[self._quota_key(account_id)], args=[month, cost])
