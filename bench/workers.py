"""Memory and throughput of Gunicorn workers (ops/gunicorn.conf.py), measured in one run.

Memory: total PSS (proportional set size, /proc/<pid>/smaps_rollup: each shared page counted
once across the processes that map it) of the whole process tree (master, workers, inference
processes) with 1, 2 and 4 workers, both models loaded, after every worker has served real
texts, with the models shared (SAAS_SHARE_MODELS=true, the default: loaded once in the master,
inference processes forked from it) and with one copy per worker (false: each inference process
spawned and loading its own, as every worker did before).

Throughput: entities over 2,000 real texts, 2 workers, 32 connections, on PostgreSQL + Redis
with keys, limits and metering on: the whole stack (Traefik in front of Gunicorn, `make stack`),
Gunicorn alone with the models shared and with one copy per worker, and `saas serve --workers
2`, in rounds that alternate (the machine is noisy).

    python -m bench.workers [--rounds 2] [--seconds 15]

Writes bench/results/workers.json.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import harness
from bench.corpus import load_texts

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
OPS = Path(__file__).resolve().parents[1] / "ops"
CONFIG = str(OPS / "gunicorn.conf.py")
STACK_KIND = "traefik + gunicorn (make stack)"
RESULTS = Path(__file__).parent / "results" / "workers.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                pids.append(int(entry.name))
    return sorted(pids)


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no Pss for {pid}")


def gunicorn(env: dict[str, str], port: int, workers: int, share: bool):  # type: ignore[no-untyped-def]
    env = {
        **env,
        "SAAS_BIND": f"127.0.0.1:{port}",
        "SAAS_WORKERS": str(workers),
        "SAAS_SHARE_MODELS": "true" if share else "false",
    }
    server = harness.start([GUNICORN, "--config", CONFIG], port, env)
    wait_all_ready(port, workers)
    return server


def wait_all_ready(port: int, workers: int) -> None:
    """Several ready answers in a row: one only shows that one worker is up."""
    streak, deadline = 0, time.monotonic() + 180
    while streak < 5 * workers and time.monotonic() < deadline:
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        time.sleep(0.1)


def memory(env: dict[str, str], bodies: Path, key: str, share: bool, workers: int) -> dict:
    port = free_port()
    server = gunicorn(env, port, workers, share)
    try:
        # Every worker serves texts first: what inference touches is what it copies.
        harness.wrk(
            f"http://127.0.0.1:{port}/v1/en_core_web_sm/entities",
            bodies,
            key=key,
            connections=8 * workers,
            seconds=5,
            warmup=0,
        )
        pids = group_pids(server.pid)
        per_process = {pid: round(pss_mb(pid), 1) for pid in pids}
    finally:
        harness.stop(server)
    return {
        "shared": share,
        "workers": workers,
        "processes": len(pids),
        "pss_mb": round(sum(per_process.values()), 1),
        "per_process_mb": sorted(per_process.values(), reverse=True),
    }


def throughput(env: dict[str, str], bodies: Path, key: str, kind: str, seconds: int) -> dict:
    port = free_port()
    prefix = ""
    if kind == "saas serve":
        server = harness.serve(env, port, workers=2)
        wait_all_ready(port, 2)
    elif kind == STACK_KIND:
        stack = [sys.executable, str(OPS / "stack.py"), "--port", str(port), "--workers", "2"]
        server = harness.start(stack, port, env, ready_path="/api/readyz")
        prefix = "/api"
    else:
        server = gunicorn(env, port, 2, share=kind == "gunicorn, shared")
    try:
        result = harness.wrk(
            f"http://127.0.0.1:{port}{prefix}/v1/en_core_web_sm/entities",
            bodies,
            key=key,
            connections=32,
            seconds=seconds,
        )
    finally:
        harness.stop(server)
    return {"server": kind, "workers": 2, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    texts = load_texts(2000)
    with tempfile.TemporaryDirectory() as tmp, harness.postgres_schema() as database:
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database,
            "SAAS_REDIS_URL": harness.REDIS,
            "SAAS_REDIS_PREFIX": f"bench-{os.getpid()}",
            "SAAS_LOG_LEVEL": "WARNING",
            "SAAS_LOG_JSON": "true",
        }
        env.pop("SAAS_MODELS", None)  # both models, the default
        key = harness.bench_key(env)
        bodies = harness.write_bodies(Path(tmp) / "bodies.jsonl", [{"text": t} for t in texts])

        rows = [
            memory(env, bodies, key, share, workers)
            for share in (True, False)
            for workers in (1, 2, 4)
        ]
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k != "per_process_mb"}))
        kinds = [STACK_KIND, "gunicorn, shared", "gunicorn, one copy per worker", "saas serve"]
        runs = []
        for _ in range(args.rounds):
            for kind in kinds:
                runs.append(throughput(env, bodies, key, kind, args.seconds))
                print(json.dumps(runs[-1]))

    shared = {row["workers"]: row["pss_mb"] for row in rows if row["shared"]}
    copied = {row["workers"]: row["pss_mb"] for row in rows if not row["shared"]}
    summary = {
        "pss_4_over_1_shared": round(shared[4] / shared[1], 2),
        "pss_4_over_1_one_copy_per_worker": round(copied[4] / copied[1], 2),
        "rps_mean": {
            kind: round(sum(r["rps"] for r in runs if r["server"] == kind) / args.rounds, 1)
            for kind in kinds
        },
    }
    print(json.dumps(summary, indent=2))
    RESULTS.write_text(json.dumps({"memory": rows, "throughput": runs, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
