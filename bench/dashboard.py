"""Dashboard page load times with a month of heavy traffic, against an idle account, in one run.

Fills a PostgreSQL schema of its own with the usage events of one busy account, EVENTS_PER_DAY
(default 100,000) a day over last month and this month so far, spread over five endpoints with
about 3% rejections (429, 402, 400), and the hourly rollups computed from them in SQL as the
ledger keeps them (raw events = rollups). A second account has no usage. `saas serve` (one
worker) then answers each page for both accounts' sessions, alternating, after a warm-up: the
pages read the rollups only, so the busy account's pages should cost about what the idle one's
do, whatever the raw table holds. An admin's pages (accounts with this month's top accounts and
rates, the busy account's page, the invoices CSV) are timed the same way.

    python -m bench.dashboard [--events-per-day 100000] [--samples 30]

Results: bench/results/dashboard.json.
"""

import argparse
import json
import os
import socket
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from bench import harness

RESULTS = Path(__file__).parent / "results" / "dashboard.json"
ENDPOINTS = ["entities", "tokens", "dependencies", "sentence-dependencies", "entities/batch"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fill(url: str, account_id: int, key_id: int, first: date, days: int, per_day: int) -> int:
    """Insert the events with generate_series, then their rollups; returns the event count."""
    total = days * per_day
    step = 86400 / per_day
    with harness.connect(url) as connection:
        connection.execute(
            """
            INSERT INTO usage_events (request_id, occurred_at, account_id, key_id, endpoint,
                model, status, chars, units, latency_ms, billable)
            SELECT md5(g::text), %(start)s + g * make_interval(secs => %(step)s), %(account)s,
                %(key)s, (%(endpoints)s::text[])[1 + g %% 5], 'en_core_web_sm', s.status,
                100 + g %% 400, 1, 12.5, s.status = 200
            FROM generate_series(0, %(total)s - 1) AS g,
            LATERAL (SELECT CASE WHEN g %% 50 = 0 THEN 429 WHEN g %% 333 = 0 THEN 402
                                 WHEN g %% 97 = 0 THEN 400 ELSE 200 END AS status) AS s
            """,
            {
                "start": datetime(first.year, first.month, first.day, tzinfo=UTC),
                "step": step,
                "account": account_id,
                "key": key_id,
                "endpoints": ENDPOINTS,
                "total": total,
            },
        )
        connection.execute(harness.ROLL_UP)
        connection.execute("ANALYZE")
    return total


def sign_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
    response = client.post("/dashboard", data={"api_key": key})
    response.raise_for_status()
    assert "saas_session" in client.cookies, "sign-in set no session"
    return client


def time_pages(
    clients: dict[str, httpx.Client], paths: list[str], samples: int
) -> dict[str, dict[str, float]]:
    timings: dict[str, list[float]] = {}
    for _ in range(3):  # warm-up: caches, connections, templates
        for client in clients.values():
            for path in paths:
                client.get(path).raise_for_status()
    for _ in range(samples):
        for path in paths:
            for name, client in clients.items():  # alternate: the machine is noisy
                started = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                timings.setdefault(f"{name} {path}", []).append(elapsed)
    return {
        label: {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(sorted(values)[int(0.95 * (len(values) - 1))], 1),
        }
        for label, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    days = (today - last_month).days + 1
    with harness.postgres_schema() as url:
        env = {**os.environ, "SAAS_DATABASE_URL": url, "SAAS_LOG_LEVEL": "WARNING"}
        env.pop("SAAS_REDIS_URL", None)
        harness.saas(env, "bootstrap")
        harness.saas(env, "plans", "create", "busy", "--monthly-quota", "100000000",
                     "--rate-limit", "1000/second")  # fmt: skip
        keys = {}
        for name in ("busy", "idle"):
            harness.saas(env, "accounts", "create", name, "--email", f"{name}@example.com",
                         "--plan", "busy")  # fmt: skip
            keys[name] = harness.saas(env, "keys", "create", name).strip().splitlines()[-1]
        harness.saas(env, "accounts", "create", "ops", "--email", "ops@example.com",
                     "--plan", "busy")  # fmt: skip
        admin_key = harness.saas(env, "keys", "create", "ops", "--scope", "admin")
        keys["admin"] = admin_key.strip().splitlines()[-1]
        listed = json.loads(harness.saas(env, "accounts", "list", "--json"))
        busy = next(account for account in listed if account["name"] == "busy")
        key_id = json.loads(harness.saas(env, "keys", "list", "busy", "--json"))[0]["id"]
        started = time.perf_counter()
        events = fill(url, busy["id"], key_id, last_month, days, args.events_per_day)
        print(f"{events:,} events and their rollups in {time.perf_counter() - started:.0f} s")
        port = free_port()
        server = harness.serve(env, port)
        try:
            base = f"http://127.0.0.1:{port}"
            clients = {name: sign_in(base, key) for name, key in keys.items()}
            admin = {"admin": clients.pop("admin")}
            month = f"{last_month:%Y-%m}"
            paths = [
                "/dashboard/overview",
                f"/dashboard/overview?month={month}",
                f"/dashboard/usage.csv?month={month}",
                "/dashboard/keys",
            ]
            timings = time_pages(clients, paths, args.samples)
            admin_paths = [
                "/dashboard/admin",
                f"/dashboard/admin/accounts/{busy['id']}",
                f"/dashboard/admin/accounts/{busy['id']}?month={month}",
                f"/dashboard/admin/invoices.csv?month={month}",
            ]
            timings |= time_pages(admin, admin_paths, args.samples)
        finally:
            harness.stop(server)
    result = {
        "events": events,
        "events_per_day": args.events_per_day,
        "days": days,
        "samples": args.samples,
        "pages": timings,
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
