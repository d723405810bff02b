"""What Idempotency-Key costs, and what a replay saves: entities on one worker (PostgreSQL +
Redis), three kinds of request interleaved round by round on the same server and texts:

- `none`: no key;
- `new`: a new key on every request (a claim before, the answer stored with the usage event);
- `replay`: keys whose answers are already stored (the retry of a client that lost an answer).

    python -m bench.idempotency [--seconds 10] [--rounds 3] [--connections 8]

Also prints how compactly answers are kept (zlib body size against the answer's). Writes
bench/results/idempotency.json.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx

from bench.corpus import load_texts
from bench.harness import REDIS, bench_key, connect, postgres_schema, serve, stop, write_bodies

SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local mode, run, key = os.getenv("BENCH_MODE"), os.getenv("BENCH_RUN"), os.getenv("BENCH_KEY")
local i, n = 0, 0
request = function()
  i = i % #bodies + 1
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Token " .. key}
  if mode == "new" then headers["Idempotency-Key"] = run .. "-" .. n end
  if mode == "replay" then headers["Idempotency-Key"] = "replay-" .. i end
  return wrk.format("POST", nil, headers, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "non_2xx": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, summary.errors.status))
end
"""
MODES = ("none", "new", "replay")


def run_wrk(url: str, script: Path, env: dict[str, str], connections: int, seconds: int) -> dict:
    run = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script)]
    out = subprocess.run([*run, url], env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))
    result["rps"] = round(result["requests"] / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--port", type=int, default=8768)
    parser.add_argument("--out", default="bench/results/idempotency.json")
    options = parser.parse_args()

    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        database_url = stack.enter_context(postgres_schema())
        texts = load_texts(options.texts)
        bodies = write_bodies(workdir / "bodies.jsonl", [{"text": t} for t in texts])
        script = workdir / "idempotency.lua"
        script.write_text(SCRIPT)
        env = {**os.environ, "SAAS_DATABASE_URL": database_url, "SAAS_REDIS_URL": REDIS,
               "SAAS_REDIS_PREFIX": f"benchidem{os.getpid()}"}  # fmt: skip
        key = bench_key(env)
        base = f"http://127.0.0.1:{options.port}"
        url = f"{base}/v1/en_core_web_sm/entities"
        server = serve(env, options.port)
        try:
            # The answers the replay mode asks for, stored once, as wrk will send them.
            lines = bodies.read_text(encoding="utf-8").splitlines()
            answer_sizes = []
            with httpx.Client(timeout=30) as http:
                for i, line in enumerate(lines, start=1):
                    headers = {"Authorization": f"Token {key}", "Idempotency-Key": f"replay-{i}",
                               "Content-Type": "application/json"}  # fmt: skip
                    answer = http.post(url, headers=headers, content=line.encode())
                    answer_sizes.append(len(answer.raise_for_status().content))
            for round_ in range(options.rounds + 1):  # round 0 warms up, unmeasured
                for mode in MODES:
                    wrk_env = {**env, "BENCH_BODIES": str(bodies), "BENCH_MODE": mode,
                               "BENCH_RUN": uuid.uuid4().hex, "BENCH_KEY": key}  # fmt: skip
                    seconds = 3 if round_ == 0 else options.seconds
                    result = run_wrk(url, script, wrk_env, options.connections, seconds)
                    if round_:
                        runs[mode].append(result)
        finally:
            stop(server)
        with connect(database_url) as connection:
            stored, compressed = connection.execute(
                "SELECT count(*), avg(length(body)) FROM idempotency_keys WHERE status = 200"
            ).fetchone()
    summary = {
        mode: {
            "rps_mean": round(statistics.mean(r["rps"] for r in results), 1),
            "p50_ms_median": round(statistics.median(r["p50_ms"] for r in results), 2),
            "p99_ms_median": round(statistics.median(r["p99_ms"] for r in results), 2),
            "non_2xx": sum(r["non_2xx"] for r in results),
        }
        for mode, results in runs.items()
    }
    report = {
        "connections": options.connections,
        "seconds": options.seconds,
        "rounds": options.rounds,
        "runs": runs,
        "summary": summary,
        "ratio_new_to_none_rps": round(summary["new"]["rps_mean"] / summary["none"]["rps_mean"], 3),
        "ratio_replay_to_none_rps": round(
            summary["replay"]["rps_mean"] / summary["none"]["rps_mean"], 3
        ),
        "stored_answers": stored,
        "answer_bytes_mean": round(statistics.mean(answer_sizes), 1),
        "stored_body_bytes_mean": round(float(compressed), 1),
    }
    Path(options.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
