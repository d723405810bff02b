"""Waiting for a condition instead of sleeping for a guessed time: the probe is asked again until
it answers something truthy or the timeout passes. Both forms return the last answer, so the
caller's assertion fails with it (and a test can still fail)."""

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Call `probe` until it returns something truthy (then return that) or `timeout` passes
    (then return its last answer, for the caller's assertion to explain)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


async def eventually_async(
    probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.05
) -> T:
    """`eventually` inside an event loop: it yields to the loop between the probes, so the tasks
    that change what `probe` sees go on running."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
