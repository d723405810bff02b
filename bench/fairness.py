"""Short-text latency while another client sends maximum-size texts, with one inference lane and
with two (SAAS_ENGINE_LONG_TEXT_CHARS), side by side in one run.

    python -m bench.fairness [--seconds 15] [--rounds 2] [--out bench/results/fairness.json]

Two `saas serve` (1 worker each, PostgreSQL + Redis, metering on) run at once, one per
configuration; only one is loaded at a time. Each round measures, in an order that rotates from
round to round, p50/p99 of short entities requests at 8 connections (wrk) on each server (a)
alone and (b) while one client posts 100,000-character texts in a loop (one at a time). Prints
each configuration's p99 with the long client over its p99 alone (goal for two lanes: at most
2), and writes them as JSON. Needs wrk, PostgreSQL and Redis (127.0.0.1), and the bench extra.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.corpus import load_texts
from bench.harness import REDIS, bench_key, postgres_schema, serve, stop, write_bodies, wrk
from saas.config import Settings

MODEL = "en_core_web_sm"
CONNECTIONS = 8
LONG_CHARS = 100_000  # the default plan's max_text_chars, which the bench key's plan keeps
CONFIGS = {"one lane": "0", "two lanes": str(Settings().engine_long_text_chars)}
GOAL = 2.0  # two lanes: p99 with the long client at most this many times p99 alone


def long_texts(texts: list[str], count: int = 4) -> list[str]:
    """Distinct texts of LONG_CHARS characters made of the corpus's sentences."""
    made = []
    for start in range(count):
        parts: list[str] = []
        size = 0
        for text in texts[start * 7 :] + texts:
            parts.append(text)
            size += len(text) + 1
            if size >= LONG_CHARS:
                break
        made.append(" ".join(parts)[:LONG_CHARS])
    return made


class LongClient:
    """One client posting long texts one after another until stopped."""

    def __init__(self, url: str, key: str, texts: list[str]) -> None:
        self.url, self.key, self.texts = url, key, texts
        self.seconds: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        headers = {"Authorization": f"Token {self.key}"}
        with httpx.Client(timeout=120) as client:
            i = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                text = self.texts[i % len(self.texts)]
                i += 1
                try:
                    response = client.post(self.url, headers=headers, json={"text": text})
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                if response.status_code == 200:
                    self.seconds.append(time.perf_counter() - started)
                else:
                    self.errors += 1

    def __enter__(self) -> "LongClient":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(port: int, key: str, bodies: Path, long: list[str] | None, seconds: int) -> dict:
    url = f"http://127.0.0.1:{port}/v1/{MODEL}/entities"
    if long is None:
        return wrk(url, bodies, key=key, connections=CONNECTIONS, seconds=seconds)
    with LongClient(url, key, long) as client:
        result = wrk(url, bodies, key=key, connections=CONNECTIONS, seconds=seconds)
    if result["requests"] == 0:
        # wrk counts only answers that arrived within the run: none did, so every short request
        # waited at least the whole run (a lower bound, flagged).
        result.update(p50_ms=seconds * 1000.0, p99_ms=seconds * 1000.0, none_answered=True)
    result["long_texts_answered"] = len(client.seconds)
    result["long_mean_s"] = round(statistics.fmean(client.seconds), 2) if client.seconds else None
    result["long_errors"] = client.errors
    return result


def summarize(runs: list[dict]) -> dict:
    """Per configuration and load: the median of the rounds' p50 and p99."""
    summary: dict[str, dict] = {}
    for config in CONFIGS:
        summary[config] = {}
        for load in ("alone", "with long client"):
            chosen = [r for r in runs if r["config"] == config and r["load"] == load]
            summary[config][load] = {
                "p50_ms": round(statistics.median(r["p50_ms"] for r in chosen), 1),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in chosen), 1),
                "rps": round(statistics.median(r["rps"] for r in chosen), 1),
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in chosen),
            }
        alone, loaded = summary[config]["alone"], summary[config]["with long client"]
        summary[config]["p99_ratio"] = round(loaded["p99_ms"] / alone["p99_ms"], 2)
        summary[config]["p50_ratio"] = round(loaded["p50_ms"] / alone["p50_ms"], 2)
    return summary


def print_report(report: dict) -> None:
    print(f"\n{'':<12}{'load':<18}{'round':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>10}{'long':>6}")
    for r in report["runs"]:
        answered = r.get("long_texts_answered", "")
        print(
            f"{r['config']:<12}{r['load']:<18}{r['round']:>6}{r['rps']:>9.1f}"
            f"{r['p50_ms']:>9.1f}{r['p99_ms']:>10.1f}{answered!s:>6}"
        )
    print("\nmedian of rounds      p99 alone  p99 with long   ratio   p50 ratio")
    for config, s in report["summary"].items():
        alone, loaded = s["alone"]["p99_ms"], s["with long client"]["p99_ms"]
        print(f"{config:<20}{alone:>11.1f}{loaded:>15.1f}{s['p99_ratio']:>8}{s['p50_ratio']:>12}")
    print(f"goal: two lanes' p99 ratio at most {GOAL}")
    runs = report["runs"]
    errors = sum(r["non_2xx"] + r["socket_errors"] + r.get("long_errors", 0) for r in runs)
    if errors:
        print(f"WARNING: {errors} requests failed: the figures above are not comparable")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8781)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fairness.json"))
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    texts = load_texts(options.texts)
    long = long_texts(load_texts())
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as database_url:
        bodies = write_bodies(Path(tmp) / "short.jsonl", [{"text": t} for t in texts])
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": database_url,
            "SAAS_REDIS_URL": REDIS,
            "SAAS_REDIS_PREFIX": Path(database_url).name.rsplit("%3D", 1)[-1],
            "SAAS_LOG_JSON": "true",
        }
        key = bench_key(env)
        ports = {config: options.port + i for i, config in enumerate(CONFIGS)}
        servers = {}
        try:
            for config, chars in CONFIGS.items():
                config_env = {**env, "SAAS_ENGINE_LONG_TEXT_CHARS": chars}
                servers[config] = serve(config_env, ports[config], workers=1)
            points = [(c, load) for c in CONFIGS for load in ("alone", "with long client")]
            for round_ in range(options.rounds):
                shift = round_ % len(points)  # rotate, so no point always runs first or last
                for config, load in points[shift:] + points[:shift]:
                    chosen = long if load == "with long client" else None
                    result = measure(ports[config], key, bodies, chosen, options.seconds)
                    runs.append({"config": config, "load": load, "round": round_ + 1, **result})
                    errors = result["non_2xx"] + result.get("long_errors", 0)
                    print(f"{config}, {load}, round {round_ + 1}: p99 {result['p99_ms']} ms,"
                          f" long texts answered {result.get('long_texts_answered', '-')},"
                          f" errors {errors}")  # fmt: skip
        finally:
            for server in servers.values():
                stop(server)

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "short_texts": len(texts),
        "short_mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "long_chars": LONG_CHARS,
        "connections": CONNECTIONS,
        "seconds_per_point": options.seconds,
        "long_text_chars": CONFIGS,
        "runs": runs,
        "summary": summarize(runs),
        "goal_two_lanes_p99_ratio": GOAL,
    }
    print_report(report)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {options.out}")


if __name__ == "__main__":
    main()
