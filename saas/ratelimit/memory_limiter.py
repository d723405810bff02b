"""Moving windows and monthly quotas in process: the embedded mode, and the per-worker fallback
when Redis is unreachable and SAAS_LIMITER_FAIL_OPEN is on. Same semantics as the Redis script."""

import time
from collections import defaultdict, deque
from collections.abc import Callable

from saas.ratelimit.windows import Decision, Window, WindowState, month_of, seconds_to_month_end


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # epoch seconds; tests pass a clock they advance
        # (account, window seconds) -> admission times, oldest first
        self._hits: dict[tuple[int, int], deque[float]] = defaultdict(deque)
        self._quota_used: dict[tuple[int, str], int] = {}

    async def admit(
        self,
        account_id: int,
        windows: tuple[Window, ...],
        *,
        quota: int | None,
        cost: int = 1,
    ) -> Decision:
        now = self.clock()
        retry_after = 0.0
        for window in windows:
            hits = self._hits[(account_id, window.seconds)]
            while hits and hits[0] <= now - window.seconds:
                hits.popleft()
            if len(hits) + cost > window.limit:
                # Room for `cost` more once the (len + cost - limit)-th oldest leaves the window.
                index = len(hits) + cost - window.limit - 1
                wait = hits[index] + window.seconds - now if index < len(hits) else window.seconds
                retry_after = max(retry_after, wait)
        if retry_after > 0:
            return Decision(
                "rate_limited", self._states(account_id, windows, now), retry_after, now
            )

        month = month_of(now)
        if quota is not None:
            if (account_id, month) not in self._quota_used:
                return Decision("unseeded", (), 0.0, now, quota_month=month)
            used = self._quota_used[(account_id, month)]
            if used + cost > quota:
                wait = seconds_to_month_end(now)
                states = self._states(account_id, windows, now)
                return Decision("quota_exhausted", states, wait, now, quota_remaining=0)
            self._quota_used[(account_id, month)] = used + cost
        for window in windows:
            self._hits[(account_id, window.seconds)].extend([now] * cost)
        remaining = None if quota is None else quota - self._quota_used[(account_id, month)]
        return Decision(
            "admitted",
            self._states(account_id, windows, now),
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

    def _states(
        self, account_id: int, windows: tuple[Window, ...], now: float
    ) -> tuple[WindowState, ...]:
        states = []
        for window in windows:
            hits = self._hits[(account_id, window.seconds)]
            reset = hits[0] + window.seconds - now if hits else 0.0
            states.append(WindowState(window, max(0, window.limit - len(hits)), max(0.0, reset)))
        return tuple(states)
