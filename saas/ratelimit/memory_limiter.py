"""Moving windows and monthly quotas in process: the embedded mode, and the per-worker fallback
when Redis is unreachable and SAAS_LIMITER_FAIL_OPEN is on. Same semantics as the Redis script
(admit.lua): BUCKETS sub-bucket counters per window, the oldest partly expired one counted in
full, so failing over to it changes nothing but which requests are seen."""

import time
from collections import defaultdict
from collections.abc import Callable

from saas.kit import months
from saas.ratelimit.windows import Decision, Window, WindowState


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # epoch seconds; tests pass a clock they advance
        # (account, window seconds) -> bucket index -> units admitted in that bucket
        self._buckets: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        self._quota_used: dict[tuple[int, str], int] = {}

    async def admit(
        self,
        account_id: int,
        windows: tuple[Window, ...],
        *,
        quota: int | None,
        cost: int = 1,
    ) -> Decision:
        # Whole microseconds, as Redis's TIME: bucket edges and resets then add up exactly.
        now_us = round(self.clock() * 1_000_000)
        now = now_us / 1e6
        retry_us = 0
        for window in windows:
            live = self._live(account_id, window, now_us)
            count = sum(units for _, units in live)
            if count + cost > window.limit:
                # Room for `cost` more once the oldest buckets holding (count + cost - limit)
                # units stop counting: bucket k stops when (k + 1) * width <= now - window.
                wait = window.micros
                freed = 0
                for index, units in live:
                    freed += units
                    if freed >= count + cost - window.limit:
                        wait = (index + 1) * window.bucket_micros + window.micros - now_us
                        break
                retry_us = max(retry_us, wait)
        if retry_us > 0:
            states = self._states(account_id, windows, now_us)
            return Decision("rate_limited", states, retry_us / 1e6, now)

        month = months.of(now)
        if quota is not None:
            if (account_id, month) not in self._quota_used:
                return Decision("unseeded", (), 0.0, now, quota_month=month)
            used = self._quota_used[(account_id, month)]
            if used + cost > quota:
                wait_s = months.seconds_to_end(now)
                states = self._states(account_id, windows, now_us)
                return Decision("quota_exhausted", states, wait_s, now, quota_remaining=0)
            self._quota_used[(account_id, month)] = used + cost
        for window in windows if cost else ():  # cost 0 only reads (Admission.peek)
            buckets = self._buckets[(account_id, window.seconds)]
            index = now_us // window.bucket_micros
            buckets[index] = buckets.get(index, 0) + cost
        remaining = None if quota is None else quota - self._quota_used[(account_id, month)]
        return Decision(
            "admitted",
            self._states(account_id, windows, now_us),
            0.0,
            now,
            quota_month=month if quota is not None else None,
            quota_remaining=remaining,
        )

    async def seed(self, account_id: int, month: str, used: int) -> None:
        self._quota_used.setdefault((account_id, month), used)

    async def refund(self, account_id: int, month: str, cost: int = 1) -> None:
        key = (account_id, month)
        if key in self._quota_used:
            self._quota_used[key] = max(0, self._quota_used[key] - cost)

    def _live(self, account_id: int, window: Window, now_us: int) -> list[tuple[int, int]]:
        """The window's counted buckets, oldest first, after dropping those that left it."""
        buckets = self._buckets[(account_id, window.seconds)]
        first = (now_us - window.micros) // window.bucket_micros
        for index in [index for index in buckets if index < first]:
            del buckets[index]
        return sorted(buckets.items())

    def _states(
        self, account_id: int, windows: tuple[Window, ...], now_us: int
    ) -> tuple[WindowState, ...]:
        states = []
        for window in windows:
            live = self._live(account_id, window, now_us)
            count = sum(units for _, units in live)
            reset_us = (
                (live[0][0] + 1) * window.bucket_micros + window.micros - now_us if live else 0
            )
            states.append(
                WindowState(window, max(0, window.limit - count), max(0.0, reset_us / 1e6))
            )
        return tuple(states)
