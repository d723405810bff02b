"""What usage metering costs: entities throughput of one worker with metering off and on,
alternating in one run on the same texts (PostgreSQL + Redis by default, as in production).

    python -m bench.metering [--seconds 15] [--rounds 2] [--sqlite]

Goal: metering on >= 0.9 x metering off.
"""

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

from bench.corpus import load_texts
from bench.harness import REDIS, bench_key, postgres_schema, serve, stop, write_bodies, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--sqlite", action="store_true", help="embedded SQLite instead")
    options = parser.parse_args()

    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        if options.sqlite:
            database_url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            database_url = stack.enter_context(postgres_schema())
        bodies = write_bodies(workdir / "bodies.jsonl", [{"text": t} for t in load_texts(2000)])
        env = {**os.environ, "SAAS_DATABASE_URL": database_url, "SAAS_REDIS_URL": REDIS,
               "SAAS_REDIS_PREFIX": f"benchmeter{os.getpid()}"}  # fmt: skip
        key = bench_key(env)
        url = f"http://127.0.0.1:{options.port}/v1/en_core_web_sm/entities"
        for _ in range(options.rounds):
            for mode in ("off", "on"):
                metering = {"SAAS_USAGE_METERING": "true" if mode == "on" else "false"}
                server = serve({**env, **metering}, options.port)
                try:
                    result = wrk(url, bodies, key=key, connections=options.connections,
                                 seconds=options.seconds)  # fmt: skip
                finally:
                    stop(server)
                rates[mode].append(result["rps"])
    off, on = (sum(values) / len(values) for values in (rates["off"], rates["on"]))
    print(
        json.dumps(
            {
                "database": "sqlite" if options.sqlite else "postgresql",
                "requests_per_second": rates,
                "mean_off": round(off, 1),
                "mean_on": round(on, 1),
                "ratio_on_to_off": round(on / off, 3),
                "goal": 0.9,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
