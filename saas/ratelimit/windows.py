"""Plan rate limits parsed once, and the decisions both limiters return."""

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from limits import parse_many

# Sub-buckets per window. A window's state is at most BUCKETS + 1 counters whatever its limit;
# the price is that a request may be refused up to one bucket (1/BUCKETS of the window, 1 s of a
# minute) before an exact moving window would admit it. Never admitted early.
BUCKETS = 60
# The longest window a plan may have: a month, whatever its length (`limits` counts a month as 30
# days). Longer ones meant counters that never expire and reset times past 64 bits.
MAX_WINDOW_SECONDS = 31 * 86_400


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # "minute", "2second": the IETF draft's policy name
    limit: int
    seconds: int

    @property
    def micros(self) -> int:
        return self.seconds * 1_000_000

    @property
    def bucket_micros(self) -> int:
        """Width of one sub-bucket: the window / BUCKETS, rounded up to the microsecond."""
        return -(-self.micros // BUCKETS)


@lru_cache(maxsize=1024)
def parse_windows(rate_limit: str) -> tuple[Window, ...]:
    """`"5/second;100/minute"` -> shortest window first. Uses the `limits` notation and parser."""
    windows = []
    for item in parse_many(rate_limit):
        unit = item.GRANULARITY.name
        name = unit if item.multiples == 1 else f"{item.multiples}{unit}"
        windows.append(Window(name=name, limit=item.amount, seconds=item.get_expiry()))
    return tuple(sorted(windows, key=lambda w: w.seconds))


@dataclass(frozen=True, slots=True)
class WindowState:
    window: Window
    remaining: int
    reset: float  # seconds until the oldest counted bucket of the window stops counting


Outcome = Literal["admitted", "rate_limited", "quota_exhausted", "unseeded"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    windows: tuple[WindowState, ...]
    retry_after: float  # seconds; 0 when admitted
    now: float  # the limiter's clock (Redis TIME), epoch seconds
    quota_month: str | None = None  # set when quota was reserved (refund it on a non-2xx answer)
    quota_remaining: int | None = None
    shared: bool = False  # decided by Redis (True) or by this worker's memory (False)

    @property
    def admitted(self) -> bool:
        return self.outcome == "admitted"

    def aged(self, elapsed: float) -> "Decision":
        """The same decision `elapsed` seconds later (for answers from the local block cache)."""
        return replace(
            self,
            windows=tuple(
                replace(state, reset=max(0.0, state.reset - elapsed)) for state in self.windows
            ),
            retry_after=max(0.0, self.retry_after - elapsed),
            now=self.now + elapsed,
        )


def ceil_seconds(value: float) -> int:
    """Whole seconds, never earlier than the real moment."""
    return max(0, math.ceil(value - 1e-9))
