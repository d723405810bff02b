"""Redis memory and commands of the limiter: the sorted-set log of earlier versions (one member
per admitted unit) against the sub-bucket counters of saas/ratelimit/admit.lua, in one run.

    python -m bench.limiter_memory [--redis URL] [--requests 2000]

For each plan (1000/minute, 100000/minute, 1000000/day) and layout: MEMORY USAGE (exact,
SAMPLES 0) of the account's window key after `--requests` single requests, and with the window
full (at its limit; for the new layout spread over all 61 buckets, its largest state). Then
the Redis commands one admission runs, from INFO commandstats deltas (the commands a script
calls are counted too), for one request and for a batch of 32, and Redis's own CPU time per
admission (EVALSHA usec per call) on a 100000/minute window 90% full.

The old script is a copy, bench/admit_sorted_set.lua (saas/ratelimit/admit.lua before the
sub-buckets): `git show` of a branch would measure the new script twice once it is merged.
By default a private redis-server on a free port (so that nobody else's commands are counted);
`--redis` uses a running one instead (its keys other than the bench's own are left alone; the
command counts then include other clients' commands of the same moment). Writes
bench/results/limiter_memory.json.
"""

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import redis.asyncio as aioredis

from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import BUCKETS, Window, parse_windows

OLD_SCRIPT = (Path(__file__).parent / "admit_sorted_set.lua").read_text()
PLANS = ("1000/minute", "100000/minute", "1000000/day")
RESULTS = Path(__file__).parent / "results" / "limiter_memory.json"


@contextmanager
def private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it or pass --redis URL")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


class Old:
    """The sorted-set script, called as the limiter of earlier versions called it."""

    name = "sorted set (old)"

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.script = client.register_script(OLD_SCRIPT)

    def window_key(self, account: int, window: Window) -> str:
        return f"{self.prefix}:rl:{{acct_{account}}}:{window.seconds}"

    def quota_key(self, account: int) -> str:
        return f"{self.prefix}:q:{{acct_{account}}}"

    async def admit(self, account: int, windows: tuple[Window, ...], cost: int, quota: int) -> bool:
        keys = [self.window_key(account, w) for w in windows] + [self.quota_key(account)]
        args: list[int] = [cost, quota]
        for window in windows:
            args += [window.limit, window.micros]
        raw = await self.script(keys=keys, args=args)
        return int(raw[0]) == 0


class New:
    """The limiter the service runs (saas/ratelimit/redis_limiter.py)."""

    name = f"{BUCKETS} sub-buckets (new)"

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.limiter = RedisLimiter(client, prefix=prefix)

    def window_key(self, account: int, window: Window) -> str:
        return self.limiter.window_key(account, window)

    def quota_key(self, account: int) -> str:
        return f"{self.limiter.prefix}:q:{{acct_{account}}}"

    async def admit(self, account: int, windows: tuple[Window, ...], cost: int, quota: int) -> bool:
        decision = await self.limiter.admit(
            account, windows, quota=None if quota < 0 else quota, cost=cost
        )
        return decision.admitted

    async def age_one_bucket(self, account: int, window: Window) -> None:
        """Every bucket one width into the past: what the passing of that much time does."""
        key = self.window_key(account, window)
        buckets = await self.client.hgetall(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={int(index) - 1: units for index, units in buckets.items()})
            await pipe.execute()


async def memory(client: aioredis.Redis, key: str) -> int:
    return int(await client.memory_usage(key, samples=0) or 0)


async def measure_memory(
    client: aioredis.Redis, requests: int, prefix: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    account = 0
    for plan in PLANS:
        (window,) = parse_windows(plan)
        row: dict[str, object] = {"plan": plan}
        for layout in (Old(client, f"{prefix}-old"), New(client, f"{prefix}-new")):
            tag = "old" if isinstance(layout, Old) else "new"
            # `requests` single requests in quick succession
            account += 1
            started = time.perf_counter()
            admitted = 0
            for _ in range(requests):
                admitted += await layout.admit(account, (window,), 1, -1)
            row[f"{tag}_us_per_request"] = round((time.perf_counter() - started) / requests * 1e6)
            row[f"{tag}_admitted"] = admitted
            row[f"{tag}_bytes_after_requests"] = await memory(
                client, layout.window_key(account, window)
            )
            # the window full
            account += 1
            if isinstance(layout, Old):
                full = window.limit  # 1,000 units per call: a million ZADDs take seconds
                for _ in range(full // 1000):
                    await layout.admit(account, (window,), 1000, -1)
                await layout.admit(account, (window,), full % 1000 or 1, -1)
            else:
                # a share of the limit in each of the BUCKETS + 1 buckets the window can hold
                full = window.limit
                share, extra = divmod(full, BUCKETS + 1)
                for index in range(BUCKETS + 1):
                    if index:
                        await layout.age_one_bucket(account, window)
                    await layout.admit(account, (window,), share + (index < extra), -1)
            row[f"{tag}_full_units"] = full
            row[f"{tag}_bytes_full"] = await memory(client, layout.window_key(account, window))
        rows.append(row)
    return rows


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


async def commands(client: aioredis.Redis, layout: Old | New, cost: int) -> dict[str, int]:
    """The commands one admission of `cost` runs on an account that already has state, with a
    monthly quota, on a two-window plan: INFO commandstats before and after."""
    windows = parse_windows("1000/second;100000/minute")
    account = 10_000 + cost
    month = time.strftime("%Y-%m", time.gmtime())
    await client.hset(layout.quota_key(account), month, 0)
    assert await layout.admit(account, windows, 1, 10**9)
    before = await command_calls(client)
    assert await layout.admit(account, windows, cost, 10**9)
    after = await command_calls(client)
    after["info"] -= 1  # the INFO that read `before`
    return {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if calls - before.get(name, 0) > 0
    }


async def script_usec(client: aioredis.Redis, layout: Old | New, calls: int = 500) -> float:
    """Redis's CPU time per admission (INFO commandstats usec of EVALSHA, the commands the
    script runs included) with the window 90% full: old 90,000 members, new 61 buckets."""
    (window,) = parse_windows("100000/minute")
    account = 20_000
    if isinstance(layout, Old):
        for _ in range(90):
            await layout.admit(account, (window,), 1000, -1)
    else:
        for index in range(BUCKETS + 1):
            if index:
                await layout.age_one_bucket(account, window)
            await layout.admit(account, (window,), 90_000 // (BUCKETS + 1), -1)
    stats = await client.info("commandstats")
    before = stats["cmdstat_evalsha"]
    for _ in range(calls):
        assert await layout.admit(account, (window,), 1, -1)
    after = (await client.info("commandstats"))["cmdstat_evalsha"]
    return round((after["usec"] - before["usec"]) / (after["calls"] - before["calls"]), 1)


async def run(url: str, requests: int) -> dict[str, object]:
    client = aioredis.Redis.from_url(url)
    prefix = f"bench-limiter-{uuid.uuid4().hex[:8]}"
    try:
        version = (await client.info("server"))["redis_version"]
        rows = await measure_memory(client, requests, prefix)
        calls = {}
        usec: dict[str, float] = {}
        for layout in (Old(client, f"{prefix}-old"), New(client, f"{prefix}-new")):
            await layout.admit(1, parse_windows("1/second"), 1, -1)  # script loaded
            tag = "old" if isinstance(layout, Old) else "new"
            for cost in (1, 32):
                calls[f"{tag}_cost_{cost}"] = await commands(client, layout, cost)
            usec[tag] = await script_usec(client, layout)
    finally:
        keys = await client.keys(f"{prefix}-*")
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()
    return {
        "redis_version": version,
        "requests": requests,
        "memory": rows,
        "commands": calls,
        "script_usec_per_admission_90pct_full": usec,
    }


def report(result: dict[str, object]) -> None:
    rows = result["memory"]
    assert isinstance(rows, list)
    print(f"Redis {result['redis_version']}, bytes per account-window (MEMORY USAGE)")
    head = f"{'plan':<15}{'after N requests: old':>24}{'new':>8}{'window full: old':>30}{'new':>8}"
    print(head.replace("N", str(result["requests"])))
    for row in rows:
        print(
            f"{row['plan']:<15}"
            f"{row['old_bytes_after_requests']:>24,}{row['new_bytes_after_requests']:>8,}"
            f"{row['old_bytes_full']:>20,} ({row['old_full_units']:,}){row['new_bytes_full']:>8,}"
        )
    print(
        "time per single admission (us, sequential): "
        + ", ".join(
            f"{row['plan']} old {row['old_us_per_request']} new {row['new_us_per_request']}"
            for row in rows
        )
    )
    calls = result["commands"]
    assert isinstance(calls, dict)
    print("Redis commands per admission (2 windows + quota; INFO commandstats, EVALSHA included)")
    for name, counted in calls.items():
        print(f"  {name:<14}{sum(counted.values()):>5}  {dict(sorted(counted.items()))}")
    usec = result["script_usec_per_admission_90pct_full"]
    assert isinstance(usec, dict)
    print(
        "Redis CPU per admission, 100000/minute 90% full (EVALSHA usec per call): "
        f"old {usec['old']}, new {usec['new']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a running Redis instead of a private one")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    if options.redis:
        result = asyncio.run(run(options.redis, options.requests))
    else:
        with private_redis() as url:
            probe = redis.Redis.from_url(url, socket_connect_timeout=0.2)
            deadline = time.monotonic() + 10
            while True:
                try:
                    probe.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # redis-server starting
            probe.close()
            result = asyncio.run(run(url, options.requests))
    report(result)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
