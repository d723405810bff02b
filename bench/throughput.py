"""Entities throughput and latency, side by side in one run on the same texts and machine.

    python -m bench.throughput [--texts 2000] [--seconds 10] [--out bench/results/throughput.json]
    python -m bench.throughput --memory 200000     # worker memory over a long run instead

1. ceiling: offline `nlp.pipe` with the components the entities endpoint runs, one process and
   `n_process=2` (steady state: timed from the first document out, so loading is not counted);
2. baseline: the original tutorial's app (bench/tutorial_app.py), one Uvicorn worker;
3. this service: PostgreSQL + Redis, key authentication, Redis rate limits and quota, usage
   metering on; 1 and 2 workers at concurrency 1, 8, 32 and 128, and the batch endpoint;
4. the peers (bench/peers/: LitServe, BentoML, mosec; `--peers`), no authentication, each
   answering the same JSON (checked on a sample), measured in rotation with the 1-worker service
   at each concurrency level.
Prints a table and the goal ratios, and writes them as JSON. Needs wrk, PostgreSQL and Redis
(127.0.0.1), and the bench extra (`pip install -e '.[bench]'`).
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import httpx

from bench.corpus import load_texts
from bench.harness import REDIS, bench_key, postgres_schema, serve, start, stop, write_bodies, wrk
from saas.config import Settings

MODEL = "en_core_web_sm"
PACKAGE = Settings().models[MODEL]
CONCURRENCY = (1, 8, 32, 128)
BATCH_TEXTS = 32  # texts per batch request
BATCH_CONNECTIONS = 8

GOALS = {
    "service_1w_c32_vs_offline_1p": 0.9,
    "service_1w_c32_vs_baseline_c32": 5.0,
    "service_2w_c32_vs_offline_2p": 0.85,
    "p99_c1_service_1w_vs_baseline": 1.2,  # at most
}


def entity_components_off(nlp) -> list[str]:  # type: ignore[no-untyped-def]
    from saas.nlp.tasks import skipped_components

    return skipped_components("entities", nlp.pipe_names)


def offline(texts: list[str], n_process: int) -> float:
    """Texts/s of nlp.pipe over the texts. One process: timed from the start (the model is
    loaded and warm). Several: timed from the first document out, so starting the processes and
    loading their models is not counted, and the documents of each process's first batch
    (already done by then) are not counted either."""
    import spacy

    nlp = spacy.load(PACKAGE)
    disable = entity_components_off(nlp)
    list(nlp.pipe(texts[:200], disable=disable))  # warm up
    batch_size = 64
    started = time.perf_counter()
    first = None
    count = 0
    for _doc in nlp.pipe(texts, disable=disable, batch_size=batch_size, n_process=n_process):
        count += 1
        if first is None:
            first = time.perf_counter()
    elapsed = time.perf_counter() - started
    if n_process == 1:
        return count / elapsed
    assert first is not None
    return (count - batch_size * n_process) / (time.perf_counter() - first)


def row(name: str, workers: int, result: dict, texts_per_request: int = 1) -> dict:
    return {
        "name": name,
        "workers": workers,
        "texts_per_s": round(result["rps"] * texts_per_request, 1),
        **result,
    }


PEERS = ("litserve", "bentoml", "mosec")
CHECKED_TEXTS = 200
# What each peer runs with (bench/peers/), recorded with the results.
PEER_SETTINGS = {
    "litserve": "1 inference worker (workers_per_device=1, cpu), max_batch_size 32, "
    "batch_timeout 0.01 s, 1 API server (Uvicorn)",
    "bentoml": "workers=1, batchable API, max_batch_size 32, max_latency_ms 10000 (adaptive)",
    "mosec": "1 worker, max_batch_size 32, max_wait_time 10 ms, JSON (de)serialization",
}  # texts each peer's answers are compared on with the service's


@dataclass
class Target:
    """A server wrk drives: its rows' name, URL, request bodies and key ("" for none)."""

    name: str
    url: str
    bodies: Path
    key: str = ""
    group: int = 0  # a peer's process group, paused (SIGSTOP) while others are measured


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_peer(name: str, workdir: Path) -> tuple[Popen[bytes], Target]:
    """Start a peer (bench/peers/) on a free loopback port and wait until it is ready."""
    port = free_port()
    env = {**os.environ, "BENCH_MODEL_PACKAGE": PACKAGE}
    bodies = workdir / "entities.jsonl"
    if name == "litserve":
        args = [sys.executable, "-m", "bench.peers.litserve_app", str(port)]
        path, ready = "/predict", "/health"
    elif name == "mosec":
        args = [sys.executable, "-m", "bench.peers.mosec_app", "--address", "127.0.0.1"]
        args += ["--port", str(port)]
        path, ready = "/inference", "/"
    elif name == "bentoml":
        bentoml = str(Path(sys.executable).parent / "bentoml")
        args = [bentoml, "serve", "bench.peers.bentoml_service:EntitiesService"]
        args += ["--host", "127.0.0.1", "--port", str(port)]
        path, ready = "/entities", "/readyz"
        env["BENTOML_HOME"] = str(workdir / "bentoml")  # else it writes to $HOME/bentoml
        bodies = workdir / "texts_of_one.jsonl"  # a batchable API takes a list (see the module)
    else:
        raise SystemExit(f"unknown peer {name!r}: choose from {', '.join(PEERS)}")
    server = start(args, port, env, ready_path=ready)
    return server, Target(name, f"http://127.0.0.1:{port}{path}", bodies, group=server.pid)


def pause(target: Target, paused: bool) -> None:
    """Pause or resume a peer's whole process group: idle, LitServe's inference worker polls its
    queue (0.14 of a core measured here), which would be taken from whichever server is being
    measured on this 2-core machine. The service is not paused (it is the one under test)."""
    if target.group:
        os.killpg(target.group, signal.SIGSTOP if paused else signal.SIGCONT)


def check_answers(service: Target, peers: list[Target], texts: list[str]) -> dict[str, int]:
    """Texts on which each peer's answer differs from the service's (the JSON, parsed)."""
    differing = {peer.name: 0 for peer in peers}
    headers = {"Authorization": f"Token {service.key}"}
    with httpx.Client(timeout=60) as client:
        for text in texts:
            expected = client.post(service.url, json={"text": text}, headers=headers).json()
            for peer in peers:
                if peer.name == "bentoml":
                    answer = client.post(peer.url, json={"texts": [text]}).json()[0]
                else:
                    answer = client.post(peer.url, json={"text": text}).json()
                differing[peer.name] += answer != expected
    return differing


def run_service(
    env: dict[str, str],
    workdir: Path,
    workers: int,
    port: int,
    seconds: int,
    peers: list[Target] | None = None,
    texts: list[str] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """The service's rows; with peers, each concurrency level measures the service and every
    peer in an order that rotates from level to level (the machine's speed drifts), after
    checking that the peers answer what the service does."""
    key = bench_key(env)
    single = workdir / "entities.jsonl"
    batch = workdir / "batch.jsonl"
    server = serve(env, port, workers)
    rows = []
    differing: dict[str, int] = {}
    try:
        url = f"http://127.0.0.1:{port}/v1/{MODEL}/entities"
        targets = [Target("service", url, single, key), *(peers or [])]
        if peers and texts:
            differing = check_answers(targets[0], peers, texts)
        for peer in peers or []:
            pause(peer, True)
        for level, connections in enumerate(CONCURRENCY):
            shift = level % len(targets)
            for target in targets[shift:] + targets[:shift]:
                pause(target, False)
                try:
                    result = wrk(
                        target.url, target.bodies, key=target.key, connections=connections,
                        seconds=seconds,
                    )  # fmt: skip
                finally:
                    pause(target, True)
                rows.append(row(target.name, workers, result))
        result = wrk(f"{url}/batch", batch, key=key, connections=BATCH_CONNECTIONS, seconds=seconds)
        rows.append(row(f"service batch of {BATCH_TEXTS}", workers, result, BATCH_TEXTS))
    finally:
        stop(server)
    return rows, differing


def run_baseline(workdir: Path, port: int, seconds: int) -> list[dict]:
    args = [sys.executable, "-m", "uvicorn", "bench.tutorial_app:app", "--port", str(port)]
    server = start([*args, "--no-access-log"], port, {**os.environ, "BENCH_MODEL_PACKAGE": PACKAGE})
    try:
        url = f"http://127.0.0.1:{port}/v1/extractions"
        return [
            row(
                "tutorial baseline",
                1,
                wrk(url, workdir / "sentences.jsonl", connections=c, seconds=seconds),
            )  # fmt: skip
            for c in CONCURRENCY
        ]
    finally:
        stop(server)


def find(rows: list[dict], name: str, workers: int, connections: int) -> dict:
    return next(
        r
        for r in rows
        if r["name"] == name and r["workers"] == workers and r["connections"] == connections
    )


def ratios(rows: list[dict], offline_1p: float, offline_2p: float) -> dict[str, float]:
    s1 = find(rows, "service", 1, 32)
    s2 = find(rows, "service", 2, 32)
    base = find(rows, "tutorial baseline", 1, 32)
    base_c1 = find(rows, "tutorial baseline", 1, 1)
    # Requests/s and p99 of the 1-worker service against each peer measured, at every level.
    vs_peers = {}
    for peer in PEERS:
        for c in CONCURRENCY:
            other = next((r for r in rows if r["name"] == peer and r["connections"] == c), None)
            if other and other["rps"] and other["p99_ms"]:
                service = find(rows, "service", 1, c)
                vs_peers[f"rps_service_1w_c{c}_vs_{peer}"] = round(service["rps"] / other["rps"], 3)
                p99 = service["p99_ms"] / other["p99_ms"]
                vs_peers[f"p99_service_1w_c{c}_vs_{peer}"] = round(p99, 3)
    return {
        **vs_peers,
        "service_1w_c32_vs_offline_1p": round(s1["rps"] / offline_1p, 3),
        "service_1w_c32_vs_baseline_c32": round(s1["rps"] / base["rps"], 2),
        "service_2w_c32_vs_offline_2p": round(s2["rps"] / offline_2p, 3),
        "p99_c1_service_1w_vs_baseline": round(
            find(rows, "service", 1, 1)["p99_ms"] / base_c1["p99_ms"], 3
        ),
        "p99_c1_service_2w_vs_baseline": round(
            find(rows, "service", 2, 1)["p99_ms"] / base_c1["p99_ms"], 3
        ),
    }


def print_table(report: dict) -> None:
    rates, samples = report["offline_texts_per_s"], report["offline_samples"]
    print(f"\noffline nlp.pipe: 1 process {rates['1']:.1f} texts/s {samples['1']}, "
          f"n_process=2 {rates['2']:.1f} texts/s {samples['2']}")  # fmt: skip
    header = f"{'':<24}{'workers':>8}{'conc':>6}{'req/s':>9}{'texts/s':>9}"
    print(header + f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in report["rows"]:
        print(
            f"{r['name']:<24}{r['workers']:>8}{r['connections']:>6}{r['rps']:>9.1f}"
            f"{r['texts_per_s']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['non_2xx'] + r['socket_errors']:>8}"
        )
    print("\nratio                                  measured   goal")
    for name, value in report["ratios"].items():
        goal = GOALS.get(name)
        print(f"{name:<38}{value:>9}   {'' if goal is None else goal}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--out", type=Path, default=Path("bench/results/throughput.json"))
    parser.add_argument("--memory", type=int, metavar="REQUESTS", help="run the memory benchmark")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to measure ({','.join(PEERS)}), or 'none'",
    )
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    if options.memory:
        from bench.memory import run_memory

        return run_memory(options.memory, options.port, options.out.with_name("memory.json"))

    texts = load_texts(options.texts)
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as database_url:
        workdir = Path(tmp)
        write_bodies(workdir / "entities.jsonl", [{"text": t} for t in texts])
        write_bodies(workdir / "sentences.jsonl", [{"sentence": t} for t in texts])
        write_bodies(workdir / "texts_of_one.jsonl", [{"texts": [t]} for t in texts])
        groups = [texts[i : i + BATCH_TEXTS] for i in range(0, len(texts), BATCH_TEXTS)]
        write_bodies(workdir / "batch.jsonl", [{"texts": g} for g in groups])
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database_url,
            "SAAS_REDIS_URL": REDIS,
            "SAAS_REDIS_PREFIX": Path(database_url).name.rsplit("%3D", 1)[-1],
            "SAAS_LOG_JSON": "true",
        }
        # The ceiling is measured at the start and again at the end, and averaged: the machine's
        # speed drifts during a run of several minutes.
        samples: dict[int, list[float]] = {1: [], 2: []}
        for n in (1, 2):
            samples[n].append(offline(texts * n, n))
        rows = run_baseline(workdir, options.port, options.seconds)
        names = [] if options.peers == "none" else [p for p in options.peers.split(",") if p]
        # All peers are started once and take turns with the service, paused when not measured.
        peers: list[tuple[Popen[bytes], Target]] = []
        try:
            for name in names:
                peers.append(start_peer(name, workdir))
            sample = texts[:CHECKED_TEXTS]
            targets = [target for _, target in peers]
            service_rows, differing = run_service(
                env, workdir, 1, options.port, options.seconds, targets, sample
            )
        finally:
            for _, target in peers:
                pause(target, False)  # a paused process group would not act on SIGTERM
            for server, _ in peers:
                stop(server)
        rows += service_rows
        rows += run_service(env, workdir, 2, options.port, options.seconds)[0]
        for n in (1, 2):
            samples[n].append(offline(texts * n, n))
        offline_rates = {n: sum(rates) / len(rates) for n, rates in samples.items()}

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "seconds_per_point": options.seconds,
        "offline_texts_per_s": {str(n): round(rate, 1) for n, rate in offline_rates.items()},
        "offline_samples": {str(n): [round(r, 1) for r in rates] for n, rates in samples.items()},
        "peers_answers": {"texts_checked": min(CHECKED_TEXTS, len(texts)), "differing": differing},
        "peer_settings": PEER_SETTINGS,
        "rows": rows,
        "ratios": ratios(rows, offline_rates[1], offline_rates[2]),
        "goals": GOALS,
    }
    print_table(report)
    if differing:
        print(
            f"\npeers' answers differing from the service's on {CHECKED_TEXTS} texts: {differing}"
        )
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {options.out}")


if __name__ == "__main__":
    main()
