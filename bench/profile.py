"""Where the time goes with one worker at 32 connections: CPU share of every process during the
load (from /proc), and py-spy profiles of the server worker and of its inference process.

    python -m bench.profile [--seconds 15] [--out bench/results/profile.txt]

Needs py-spy (bench extra) and the right to trace processes (root, or ptrace_scope 0).
"""

import argparse
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.harness import entities_service, wrk
from bench.memory import inference_pid

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def cpu_ticks() -> dict[int, tuple[str, int]]:
    ticks = {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
        except (OSError, ValueError):
            continue
        if not proc.name.isdigit():
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(proc.name)] = (
            stat[stat.index("(") + 1 : stat.rindex(")")],
            int(fields[11]) + int(fields[12]),
        )
    return ticks


def summarize(raw: Path, title: str, top: int = 25) -> list[str]:
    """Self and inclusive shares of the busiest thread's samples (idle threads left out)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in ("wait (threading", "_worker (concurrent")):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"== {title}: {total} busy samples", "-- self"]
    lines += [f"{n / total:6.1%}  {f[:120]}" for f, n in own.most_common(top)]
    lines += ["-- inclusive"]
    lines += [f"{n / total:6.1%}  {f[:120]}" for f, n in inclusive.most_common(top * 2)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8772)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile.txt"))
    options = parser.parse_args()
    with entities_service(options.port, f"benchprof{os.getpid()}") as service:
        server, workdir = service.server, service.workdir
        url, bodies, key = service.url, service.bodies, service.key
        child = inference_pid(server.pid)
        wrk(url, bodies, key=key, connections=options.connections, seconds=3, warmup=0)
        spies = [
            subprocess.Popen(
                [
                    PY_SPY,
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(options.seconds),
                    "-r",
                    "100",
                    "-f",
                    "raw",
                    "-o",
                    str(workdir / f"{name}.txt"),
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in (("server", server.pid), ("inference", child))
        ]
        before, started = cpu_ticks(), time.monotonic()
        result = wrk(url, bodies, key=key, connections=options.connections,
                     seconds=options.seconds, warmup=0)  # fmt: skip
        after, elapsed = cpu_ticks(), time.monotonic() - started
        for spy in spies:
            spy.wait()
        names = {server.pid: "server worker (event loop)", child: "inference process"}
        share: dict[str, float] = defaultdict(float)
        for pid, (comm, ticks) in after.items():
            used = ticks - before.get(pid, (comm, 0))[1]
            share[names.get(pid, comm)] += used / os.sysconf("SC_CLK_TCK") / elapsed
        lines = [
            f"1 worker, {options.connections} connections: {result['rps']} requests/s, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms",
            "CPU (1.0 = one core):",
        ]
        lines += [f"  {v:5.2f}  {k}" for k, v in sorted(share.items(), key=lambda x: -x[1])[:8]]
        lines += summarize(workdir / "server.txt", "server worker")
        lines += summarize(workdir / "inference.txt", "inference process")
    text = "\n".join(lines) + "\n"
    print(text)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text)


if __name__ == "__main__":
    main()
