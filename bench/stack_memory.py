"""Resident memory of every process of the stack that ops/stack.py starts, read from /proc.

The tree under the stack script: Traefik, and the Gunicorn master, whose children are the
workers, whose children are their inference processes (and multiprocessing's resource tracker,
counted as "other"). RSS counts every page a process maps; PSS (smaps_rollup) counts each shared
page once across the processes that share it, so the sum of PSS is the stack's real footprint
(the models are loaded in the master and shared by fork).
"""

import threading
import time
from pathlib import Path
from typing import Any


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:  # the process has just exited
        pass
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes(stack_pid: int) -> dict[int, str]:
    """Every process of the stack, by pid, with its group."""
    groups: dict[int, str] = {}
    for top in children(stack_pid):
        if "traefik" in command(top):
            groups.update({pid: "traefik" for pid in [top, *descendants(top)]})
            continue
        groups[top] = "gunicorn master"
        for worker in children(top):
            groups[worker] = "gunicorn worker"
            for child in children(worker):
                kind = "other" if "resource_tracker" in command(child) else "inference"
                groups[child] = kind
                groups.update({pid: "other" for pid in descendants(child)})
    return groups


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def memory_kib(pid: int) -> dict[str, int] | None:
    """RSS and PSS in KiB, or None if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    pss = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return {"rss_kib": rss, "pss_kib": pss}


class Sampler:
    """Samples every process of the stack every `every` seconds, in a thread, until stopped.
    The process list is read again at each sample, so a replaced worker shows as a new pid."""

    def __init__(self, stack_pid: int, every: float) -> None:
        self.stack_pid = stack_pid
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            at = round(time.perf_counter() - self.t0, 1)
            sample = {}
            for pid, group in processes(self.stack_pid).items():
                if (memory := memory_kib(pid)) is not None:
                    sample[pid] = {"group": group, **memory}
            self.samples.append({"at": at, "processes": sample})
            if self._stop.wait(self.every):
                return
