"""Soak: the deployment stack at 80% of its measured capacity for 10 minutes, open loop.

Zero errors, flat memory and every 2xx billed, or exit 1.

    python -m bench.soak [--seconds 600] [--capacity-seconds 30] [--load 0.8]
    python -m bench.soak --seconds 60 --capacity-seconds 10      # a short check

The stack as `make stack` runs it (ops/stack.py: Traefik in front of Gunicorn with 2 workers)
on the machine's PostgreSQL (a schema of its own, dropped afterwards) and Redis (a key prefix of
its own, deleted afterwards), with key authentication, Redis rate limits and quota and usage
metering on. Two accounts on a plan whose limits never refuse: one for the warm-up and the
capacity run, one for the soak, so each phase's billing is checked on its own.

1. warm-up: closed loop, unmeasured, so every worker has served texts;
2. capacity: closed loop at --concurrency for --capacity-seconds: 2xx answers per second;
3. soak: open loop (a fixed arrival schedule, bench/load.py) at --load x capacity for
   --seconds, entities on 2,000 real texts, while the RSS and PSS of every process of the stack
   are sampled every --sample-every seconds (bench/stack_memory.py);
4. the stack is stopped gracefully (usage committed), then the ledger is read.

Criteria (exit 1 if one fails): no answer other than 2xx in the soak and no transport error;
billed units in the ledger = 2xx answered, for each account; memory flat: for the whole stack
and each process group, RSS and PSS in the last minute within 10% of the minute after the
first (the first is warm-up; shorter runs use quarters of the run instead of minutes); the same
processes at the end as at the start (no worker died); the stack kept up (2xx per second, from
the first request to the last answer, at least 95% of the target: no backlog at the end); the
client kept its schedule (no request sent more than 1 s late). Prints the figures and writes
them to bench/results/soak.json.
"""

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from bench import harness, load, stack_memory
from bench.corpus import load_texts
from bench.workers import free_port

STACK = Path(__file__).resolve().parents[1] / "ops" / "stack.py"
RESULTS = Path(__file__).parent / "results" / "soak.json"
MODEL = "en_core_web_sm"
WARMUP_SECONDS = 10
MEMORY_TOLERANCE = 0.10
TOTAL = "stack total"
MAX_LAG = 1.0  # seconds a request may leave after its scheduled moment
# 2xx per second, from the first request to the last answer, over the target: below this the
# stack fell behind the schedule (a backlog at the end), whatever its latency looked like.
KEPT_UP = 0.95


def create_key(env: dict[str, str], account: str) -> tuple[int, str]:
    """An account on the soak plan, and a key of it."""
    out = harness.saas(
        env, "accounts", "create", account, "--email", f"{account}@example.com", "--plan", "soak"
    )
    account_id = int(out.strip().splitlines()[-1])
    key = harness.saas(env, "keys", "create", account, "--name", account)
    return account_id, key.strip().splitlines()[-1]


def start_stack(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        stack = subprocess.Popen(
            [sys.executable, str(STACK), "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    harness.wait_ready(port, stack, timeout=300, path="/api/readyz")
    return stack


def stop_stack(stack: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the stack script, which stops Traefik, then Gunicorn gracefully (usage
    committed). If that hangs, SIGKILL to each process of the stack (each runs in a session of
    its own, so the script's process group does not hold them)."""
    started = stack_memory.processes(stack.pid)
    if stack.poll() is None:
        stack.send_signal(signal.SIGTERM)
    try:
        return stack.wait(120)
    except subprocess.TimeoutExpired:
        for pid in [*started, stack.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return stack.wait(30)


def delete_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(harness.REDIS)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


def ledger(database: str, account_id: int) -> dict[str, Any]:
    with harness.connect(database) as connection:
        rows = connection.execute(
            "SELECT status, count(*), sum(units), sum(CASE WHEN billable THEN units ELSE 0 END)"
            " FROM usage_events WHERE account_id = %s GROUP BY status",
            (account_id,),
        ).fetchall()
    return {
        "events_by_status": {str(status): events for status, events, _, _ in rows},
        "billed_units": sum(billed for *_, billed in rows),
    }


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_ms(outcomes: list[load.Outcome]) -> dict[str, float]:
    ordered = sorted(outcome.latency * 1000 for outcome in outcomes)
    if not ordered:
        return {}
    return {
        "p50_ms": round(percentile(ordered, 0.50), 1),
        "p99_ms": round(percentile(ordered, 0.99), 1),
        "max_ms": round(ordered[-1], 1),
    }


def statuses(outcomes: Iterable[load.Outcome]) -> dict[str, int]:
    counts = Counter(str(o.status) if o.status else f"no answer ({o.error})" for o in outcomes)
    return dict(sorted(counts.items()))


def ok(outcomes: Iterable[load.Outcome]) -> int:
    return sum(200 <= outcome.status < 300 for outcome in outcomes)


def per_minute(outcomes: list[load.Outcome]) -> list[dict[str, Any]]:
    minutes: dict[int, list[load.Outcome]] = {}
    for outcome in outcomes:
        minutes.setdefault(int(outcome.at // 60), []).append(outcome)
    return [
        {"minute": minute + 1, "requests": len(group), "statuses": statuses(group)}
        | latency_ms(group)
        for minute, group in sorted(minutes.items())
    ]


def memory_series(sample: dict[str, Any]) -> dict[str, dict[str, int]]:
    """One sample as name -> {rss_kib, pss_kib}: the whole stack, each group, each process."""
    out: dict[str, dict[str, int]] = {}
    for pid, process in sample["processes"].items():
        for name in (TOTAL, process["group"], f"{process['group']} pid {pid}"):
            entry = out.setdefault(name, {"rss_kib": 0, "pss_kib": 0})
            entry["rss_kib"] += process["rss_kib"]
            entry["pss_kib"] += process["pss_kib"]
    return out


def memory_figures(samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Start (mean of the samples in the window after the first: the first is warm-up), end
    (mean of the last window), max and change of each series, RSS and PSS."""
    window = min(60.0, seconds / 4)
    timeline = [(sample["at"], memory_series(sample)) for sample in samples]
    start = [series for at, series in timeline if window <= at < 2 * window]
    end = [series for at, series in timeline if at >= seconds - window]

    def mean(window_series: list[dict[str, dict[str, int]]], name: str, field: str) -> float | None:
        values = [series[name][field] for series in window_series if name in series]
        return sum(values) / len(values) if values else None

    names = sorted(
        {name for _, series in timeline for name in series}, key=lambda n: (n != TOTAL, n)
    )
    figures: dict[str, Any] = {}
    for name in names:
        figures[name] = {}
        for field in ("rss_kib", "pss_kib"):
            first, last = mean(start, name, field), mean(end, name, field)
            peak = max(series[name][field] for _, series in timeline if name in series)
            figures[name][field.removesuffix("_kib")] = {
                "start_mb": None if first is None else round(first / 1024, 1),
                "end_mb": None if last is None else round(last / 1024, 1),
                "max_mb": round(peak / 1024, 1),
                "change": None if not first or last is None else round(last / first - 1, 4),
            }
    # The trend of each group, for the eye: growth that levels off or keeps going.
    trend = [
        {"at": at}
        | {
            name: round(values["pss_kib"] / 1024, 1)
            for name, values in series.items()
            if " pid " not in name
        }
        for at, series in timeline
    ]
    return {
        "window_seconds": window,
        "samples": len(samples),
        "figures": figures,
        "pss_mb_over_time": trend,
    }


def criteria(result: dict[str, Any]) -> dict[str, bool]:
    soak = result["soak"]
    groups = {
        name: figure for name, figure in result["memory"]["figures"].items() if " pid " not in name
    }
    flat = all(
        figure[field]["change"] is not None and abs(figure[field]["change"]) <= MEMORY_TOLERANCE
        for figure in groups.values()
        for field in ("rss", "pss")
    )
    return {
        "no errors in the soak": soak["errors"] == 0,
        "billed = 2xx (soak account)": soak["billed_units"] == soak["ok"],
        "billed = 2xx (capacity account)": (
            result["capacity"]["billed_units"] == result["capacity"]["ok"]
        ),
        "memory flat within 10% (total and every group)": flat,
        "same processes at the end": result["processes"]["same_at_end"],
        "the stack kept up (2xx/s >= 95% of target)": soak["achieved_over_target"] >= KEPT_UP,
        "client kept its schedule": soak["client_max_lag_s"] <= MAX_LAG,
    }


def print_report(result: dict[str, Any], verdict: dict[str, bool]) -> None:
    capacity, soak = result["capacity"], result["soak"]
    print(f"machine load average (1 min), start and end: {result['load_average_start_end']}")
    print(
        f"capacity: {capacity['rps']} 2xx/s closed loop at c={capacity['concurrency']}, "
        f"{capacity['seconds']} s, statuses {capacity['statuses']}"
    )
    print(
        f"soak: target {soak['target_rps']} req/s for {soak['seconds']} s; sent "
        f"{soak['sent']} ({soak['sent_rps']}/s), answered {soak['statuses']}; "
        f"achieved {soak['achieved_rps']} 2xx/s "
        f"({soak['achieved_over_target']} of target); client CPU {soak['client_cpu_s']} s, "
        f"max lag {soak['client_max_lag_s']} s"
    )
    print("minute  requests   p50 ms   p99 ms   max ms  statuses")
    for row in soak["per_minute"]:
        print(
            f"{row['minute']:>6}  {row['requests']:>8}  {row['p50_ms']:>7}  {row['p99_ms']:>7}"
            f"  {row['max_ms']:>7}  {row['statuses']}"
        )
    memory = result["memory"]
    print(
        f"memory (MB; start = mean of {memory['window_seconds']:.0f} s after the first "
        f"{memory['window_seconds']:.0f} s, end = mean of the last; {memory['samples']} samples)"
    )
    print(
        f"{'':34} {'RSS start':>9} {'end':>7} {'max':>7} {'change':>7}"
        f"  {'PSS start':>9} {'end':>7} {'max':>7} {'change':>7}"
    )
    for name, figure in memory["figures"].items():
        cells = "  ".join(
            f"{figure[f]['start_mb']!s:>9} {figure[f]['end_mb']!s:>7} {figure[f]['max_mb']!s:>7} "
            f"{'' if figure[f]['change'] is None else format(figure[f]['change'], '+.1%'):>7}"
            for f in ("rss", "pss")
        )
        print(f"{name:34} {cells}")
    print(
        f"billed units: soak {soak['billed_units']} vs 2xx {soak['ok']}; capacity account "
        f"{capacity['billed_units']} vs 2xx {capacity['ok']}"
    )
    for name, passed in verdict.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--capacity-seconds", type=float, default=30)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity")
    parser.add_argument("--concurrency", type=int, default=64, help="capacity run connections")
    parser.add_argument("--connections", type=int, default=256, help="most the soak's client opens")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_start = round(os.getloadavg()[0], 2)
    bodies = [json.dumps({"text": text}).encode() for text in load_texts(args.texts)]
    prefix = f"soak-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, harness.postgres_schema() as database:
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database,
            "SAAS_REDIS_URL": harness.REDIS,
            "SAAS_REDIS_PREFIX": prefix,
            "SAAS_LOG_LEVEL": "WARNING",
            "SAAS_LOG_JSON": "true",
        }
        env.pop("SAAS_MODELS", None)  # both models, the default
        harness.saas(env, "bootstrap")
        harness.saas(
            env,
            "plans",
            "create",
            "soak",
            "--rate-limit",
            "100000/second;10000000/hour",
            "--monthly-quota",
            "1000000000",
        )
        capacity_account, capacity_key = create_key(env, "capacity")
        soak_account, soak_key = create_key(env, "soak")

        port = free_port()
        url = f"http://127.0.0.1:{port}/api/v1/{MODEL}/entities"
        log = Path(tmp) / "stack.log"
        stack = start_stack(env, port, log)
        try:
            closed = functools.partial(load.closed_loop, url, capacity_key, bodies)
            warm = asyncio.run(closed(concurrency=args.concurrency, seconds=WARMUP_SECONDS))
            measured = asyncio.run(
                closed(concurrency=args.concurrency, seconds=args.capacity_seconds)
            )
            capacity_rps = ok(measured.outcomes) / measured.seconds
            if not capacity_rps:
                raise SystemExit(f"no 2xx in the capacity run: {statuses(measured.outcomes)}")
            target = round(args.load * capacity_rps, 1)
            print(
                f"capacity {capacity_rps:.1f} 2xx/s; soak at {target} req/s for "
                f"{args.seconds:.0f} s",
                flush=True,
            )
            before = stack_memory.processes(stack.pid)
            sampler = stack_memory.Sampler(stack.pid, args.sample_every)
            sampler.start()
            soak = load.open_loop(
                url,
                soak_key,
                bodies,
                rate=target,
                seconds=args.seconds,
                connections=args.connections,
            )
            try:
                run = asyncio.run(soak)
            finally:
                sampler.stop()
            after = stack_memory.processes(stack.pid)
        finally:
            exit_code = stop_stack(stack)
            delete_redis_prefix(prefix)
        capacity_ledger = ledger(database, capacity_account)
        soak_ledger = ledger(database, soak_account)
        # What the stack logged once ready (warnings and errors: SAAS_LOG_LEVEL=WARNING).
        log_lines = log.read_text(errors="replace").partition("stack: ready")[2].splitlines()[1:]

    warm_and_measured = warm.outcomes + measured.outcomes
    soak_ok = ok(run.outcomes)
    result: dict[str, Any] = {
        "stack": "traefik + gunicorn, 2 workers (ops/stack.py), PostgreSQL + Redis",
        # Other work on the machine shows here: each number is from the same noisy run.
        "load_average_start_end": [load_start, round(os.getloadavg()[0], 2)],
        "endpoint": f"POST /api/v1/{MODEL}/entities, {len(bodies)} real texts",
        "capacity": {
            "concurrency": args.concurrency,
            "seconds": round(measured.seconds, 1),
            "rps": round(capacity_rps, 1),
            **latency_ms(measured.outcomes),
            "statuses": statuses(measured.outcomes),
            "warmup_statuses": statuses(warm.outcomes),
            "ok": ok(warm_and_measured),
            **capacity_ledger,
        },
        "soak": {
            "load": args.load,
            "target_rps": target,
            "seconds": args.seconds,
            "sent": len(run.outcomes),
            "sent_rps": round(len(run.outcomes) / args.seconds, 1),
            "statuses": statuses(run.outcomes),
            "ok": soak_ok,
            "errors": len(run.outcomes) - soak_ok,
            "achieved_rps": round(soak_ok / run.seconds, 1),
            "achieved_over_target": round(soak_ok / run.seconds / target, 3),
            **latency_ms(run.outcomes),
            "per_minute": per_minute(run.outcomes),
            "client_cpu_s": round(run.client_cpu_seconds, 1),
            "client_max_lag_s": round(run.max_lag, 3),
            **soak_ledger,
        },
        "memory": memory_figures(sampler.samples, args.seconds),
        "processes": {
            "at_start": {str(pid): group for pid, group in sorted(before.items())},
            "same_at_end": before == after,
            "stack_exit_code": exit_code,
            "stack_log_lines_once_ready": len(log_lines),
        },
    }
    verdict = criteria(result)
    result["criteria"] = verdict
    print_report(result, verdict)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not all(verdict.values()):
        print("stack log once ready, last lines:", *log_lines[-20:] or ["(nothing)"], sep="\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
