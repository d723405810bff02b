"""Worker memory over a long run: RSS of the server worker and of its inference process after
the first 10,000 requests and then every so often until `requests` (e.g. 200,000).

    python -m bench.throughput --memory 200000

One worker on PostgreSQL + Redis with metering on, wrk at 32 connections rotating the corpus's
texts of up to 80 characters (5,465 of them; short, so 200,000 requests take minutes, not
half an hour); every request also carries a word never seen before, so without spaCy's
`memory_zone` the model's string store would grow with every request. Goal: final RSS within
10% of the 10,000 mark.
"""

import json
import os
import tempfile
from pathlib import Path

from bench.corpus import load_texts
from bench.harness import REDIS, bench_key, postgres_schema, serve, stop, write_bodies, wrk

MODEL = "en_core_web_sm"
FIRST_MARK = 10_000
CONNECTIONS = 32


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def inference_pid(server_pid: int) -> int:
    """The spawned inference process (the other child is multiprocessing's resource tracker)."""
    for pid in children(server_pid):
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise SystemExit("no inference process found")


def run_memory(requests: int, port: int, out: Path) -> None:
    texts = [text for text in load_texts() if len(text) <= 80]
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as database_url:
        bodies = write_bodies(Path(tmp) / "entities.jsonl", [{"text": t} for t in texts])
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database_url,
            "SAAS_REDIS_URL": REDIS,
            "SAAS_REDIS_PREFIX": f"benchmem{os.getpid()}",
            "SAAS_LOG_JSON": "true",
        }
        key = bench_key(env)
        server = serve(env, port, workers=1)
        url = f"http://127.0.0.1:{port}/v1/{MODEL}/entities"
        samples = []
        done = 0
        try:
            child = inference_pid(server.pid)
            for mark in [FIRST_MARK, *range(50_000, requests + 1, 50_000)]:
                while done < mark:
                    seconds = round(max(5, min(60, (mark - done) / 400)))
                    result = wrk(url, bodies, key=key, connections=CONNECTIONS, seconds=seconds,
                                 warmup=0, unique=True)  # fmt: skip
                    if result["non_2xx"] or result["socket_errors"]:
                        raise SystemExit(f"errors during the memory run: {result}")
                    done += result["requests"]
                sample = {"requests": done, "worker_kib": rss_kib(server.pid),
                          "inference_kib": rss_kib(child)}  # fmt: skip
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        finally:
            stop(server)
    first, last = samples[0], samples[-1]
    report = {
        "samples": samples,
        "growth_worker": round(last["worker_kib"] / first["worker_kib"] - 1, 4),
        "growth_inference": round(last["inference_kib"] / first["inference_kib"] - 1, 4),
        "goal": "each within 0.10",
    }
    print(json.dumps(report, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
