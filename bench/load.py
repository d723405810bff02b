"""Load from one loopback client (asyncio + aiohttp), two ways:

- closed loop: `concurrency` requests in flight, each sent as soon as the one before it is
  answered: what the server can do (its capacity);
- open loop: requests at a fixed arrival schedule (`rate` per second), whatever the answers do:
  a slow server shows as latency, not as fewer requests. Latency counts from the scheduled
  moment, so time a request waits in the client (for a connection) counts too.

wrk (bench/harness.py) only does the closed loop; wrk2 and vegeta, which keep a schedule, are not
in Debian, and the same client for both runs keeps its own CPU cost the same in both. aiohttp, not
httpx: with 90 requests in flight (300/s answered in 0.3 s by a stub server) httpx's pool cost
10 to 21 ms of CPU per request and fell 5 to 110 s behind the schedule, aiohttp 0.3 ms and 0.02 s.
"""

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

TIMEOUT = 30.0  # a request not answered by then counts as an error (status 0)


@dataclass(frozen=True)
class Outcome:
    at: float  # seconds from the start of the run: when it was scheduled (open) or sent (closed)
    latency: float  # seconds from then to the answer
    status: int  # 0: no HTTP answer (timeout, connection refused or reset)
    error: str = ""  # the transport error's type, when status is 0


@dataclass(frozen=True)
class Run:
    outcomes: list[Outcome]
    seconds: float  # from the first request sent to the last answer
    client_cpu_seconds: float  # this process's CPU time during the run
    max_lag: float = 0.0  # open loop: the latest a request left after its scheduled moment


def client(connections: int) -> aiohttp.ClientSession:
    # The timeout is the whole request's, waiting for a connection included: that wait is
    # latency too.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
    )


async def send(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    since: float,
    t0: float,
) -> Outcome:
    try:
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
            status, error = response.status, ""
    except (aiohttp.ClientError, TimeoutError) as exc:
        status, error = 0, type(exc).__name__
    return Outcome(at=since - t0, latency=time.perf_counter() - since, status=status, error=error)


def headers_for(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}", "Content-Type": "application/json"}


async def closed_loop(
    url: str, key: str, bodies: Sequence[bytes], *, concurrency: int, seconds: float
) -> Run:
    headers = headers_for(key)
    cycle = itertools.cycle(bodies)
    outcomes: list[Outcome] = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds

    async def loop(http: aiohttp.ClientSession) -> None:
        while (now := time.perf_counter()) < end:
            outcomes.append(await send(http, url, headers, next(cycle), now, t0))

    async with client(concurrency) as http:
        await asyncio.gather(*(loop(http) for _ in range(concurrency)))
    return Run(outcomes, time.perf_counter() - t0, time.process_time() - cpu0)


async def open_loop(
    url: str, key: str, bodies: Sequence[bytes], *, rate: float, seconds: float, connections: int
) -> Run:
    headers = headers_for(key)
    cycle = itertools.cycle(bodies)
    pending: set[asyncio.Task[Outcome]] = set()
    outcomes: list[Outcome] = []
    max_lag = 0.0

    def finished(task: asyncio.Task[Outcome]) -> None:
        # Keep the outcome, not the task: a 10-minute run schedules about 100,000 of them.
        pending.discard(task)
        outcomes.append(task.result())

    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.05
    async with client(connections) as http:
        for i in range(round(rate * seconds)):
            scheduled = t0 + i / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            max_lag = max(max_lag, time.perf_counter() - scheduled)
            task = asyncio.create_task(send(http, url, headers, next(cycle), scheduled, t0))
            pending.add(task)
            task.add_done_callback(finished)
        await asyncio.gather(*pending)
    return Run(outcomes, time.perf_counter() - t0, time.process_time() - cpu0, max_lag)
