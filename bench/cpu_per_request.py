"""CPU time per entities request, by process and by step (issue 23, point 1).

    python -m bench.cpu_per_request [--seconds 20] [--connections 32]

`saas serve` with one worker on PostgreSQL (a schema of its own) and Redis, keys, limits, quota
and metering on, driven by wrk on short real texts (bench/corpus.py). Two intervals:
1. without a profiler: each process's CPU time over the interval (utime + stime from
   /proc/PID/stat, threads included), divided by the requests answered in it: the worker
   (its event loop and threads), each inference process, PostgreSQL (all its backends), Redis;
2. with py-spy on the worker: its busy samples, each given to the step of its innermost frame
   that belongs to one (STEPS, first match from the leaf), then scaled to (1)'s worker CPU per
   request. py-spy's own CPU is left out of (1) by measuring apart.
Writes bench/results/cpu_per_request.json. Needs wrk, py-spy (bench extra) and the right to
trace processes (root, or ptrace_scope 0)."""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.harness import entities_service, wrk

PY_SPY = str(Path(sys.executable).parent / "py-spy")
RESULTS = Path("bench/results/cpu_per_request.json")
TICK = os.sysconf("SC_CLK_TCK")

# A step of the worker's work, by the source its frames come from: the first step (from the
# leaf of a sample's stack) whose pattern a frame holds gets the sample.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("structlog/", "logging/", "saas/kit/logging.py")),
    ("metrics", ("prometheus_client/", "saas/kit/metrics.py")),
    ("usage event (recorder, ledger, PostgreSQL)", ("saas/usage/", "psycopg", "sqlalchemy/")),
    (
        "inference round trip (lane, wire)",
        ("saas/nlp/lane.py", "saas/nlp/pool.py", "saas/nlp/wire.py", "multiprocessing/"),
    ),
    (
        "admission (policy, limiter, Redis)",
        (
            "saas/pipeline/admission.py",
            "saas/pipeline/usage.py",
            "saas/pipeline/idempotency.py",
            "saas/pipeline/batch_body.py",
            "saas/nlp/policy.py",
            "saas/ratelimit/",
            "redis/",
        ),
    ),
    ("authentication", ("saas/pipeline/auth.py", "saas/keys/", "saas/auth/")),
    (
        "request context, body limit",
        ("saas/pipeline/request_context.py", "saas/pipeline/body_limit.py", "saas/web/context.py"),
    ),
    (
        "routing, dependencies, validation",
        ("starlette/", "fastapi/", "pydantic", "saas/nlp/routes.py", "saas/web/"),
    ),
    ("HTTP parsing and writing (uvicorn)", ("uvicorn/", "httptools")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
)
IDLE = ("wait (threading", "_worker (concurrent", "select (selectors")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def processes() -> dict[int, tuple[str, int, str]]:
    """Every process: (command name, parent pid, command line)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        found[int(proc.name)] = (comm, ppid, cmdline)
    return found


def roles(server_pid: int) -> dict[int, str]:
    """The processes whose CPU is counted: the worker, its inference processes, PostgreSQL and
    Redis (all of theirs on this machine: the benchmark is the only load it is given)."""
    table = processes()
    named = {server_pid: "worker (event loop and threads)"}
    for pid, (comm, ppid, cmdline) in table.items():
        spawned = "multiprocessing" in cmdline and "resource_tracker" not in cmdline
        if ppid == server_pid and spawned:
            named[pid] = "inference processes (both lanes)"
        elif comm.startswith("postgres"):
            named[pid] = "PostgreSQL"
        elif comm.startswith("redis-server"):
            named[pid] = "Redis"
    return named


def cpu_by_role(named: dict[int, str]) -> dict[int, float]:
    seconds = {}
    for pid in named:
        try:
            seconds[pid] = cpu_seconds(pid)
        except OSError:
            continue  # gone meanwhile
    return seconds


def step_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for step, patterns in STEPS:
            if any(pattern in frame for pattern in patterns):
                return step
    return "other"


def profile_steps(raw: Path) -> tuple[Counter[str], int]:
    steps: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE):
            continue
        total += int(count)
        steps[step_of(frames)] += int(count)
    return steps, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8773)
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    with entities_service(options.port, f"benchcpu{os.getpid()}") as service:
        url, bodies, key = service.url, service.bodies, service.key
        wrk(url, bodies, key=key, connections=options.connections, seconds=5, warmup=0)
        named = roles(service.server.pid)
        before = cpu_by_role(named)
        loaded = wrk(url, bodies, key=key, connections=options.connections,
                     seconds=options.seconds, warmup=0)  # fmt: skip
        after = cpu_by_role(named)
        raw = service.workdir / "worker.txt"
        spy = subprocess.Popen(
            [
                PY_SPY,
                "record",
                "-p",
                str(service.server.pid),
                "-d",
                str(options.seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)  # py-spy attaches
        profiled = wrk(url, bodies, key=key, connections=options.connections,
                       seconds=options.seconds - 2, warmup=0)  # fmt: skip
        if spy.wait() != 0:
            raise SystemExit("py-spy failed: it needs the right to trace the worker")
        steps, samples = profile_steps(raw)

    requests = loaded["requests"]
    per_role: Counter[str] = Counter()
    for pid, role in named.items():
        if pid in before and pid in after:
            per_role[role] += (after[pid] - before[pid]) * 1000 / requests
    worker_ms = per_role["worker (event loop and threads)"]
    report = {
        "connections": options.connections,
        "requests_per_s": loaded["rps"],
        "p99_ms": loaded["p99_ms"],
        "errors": loaded["non_2xx"] + loaded["socket_errors"],
        "cpu_ms_per_request": {role: round(ms, 3) for role, ms in per_role.most_common()},
        "profiled_requests_per_s": profiled["rps"],
        "worker_samples": samples,
        "worker_ms_per_request_by_step": {
            step: round(worker_ms * count / samples, 3) for step, count in steps.most_common()
        },
    }
    print(
        f"1 worker, {options.connections} connections: {loaded['rps']} requests/s, "
        f"p99 {loaded['p99_ms']} ms, {report['errors']} errors"
    )
    print("CPU ms per request, by process:")
    for role, ms in report["cpu_ms_per_request"].items():
        print(f"  {ms:7.3f}  {role}")
    print(f"the worker's, by step ({samples} busy samples, under py-spy {profiled['rps']} r/s):")
    for step, ms in report["worker_ms_per_request_by_step"].items():
        print(f"  {ms:7.3f}  {step}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
