"""What usage metering costs: entities throughput of one worker with metering off and on,
alternating in one run on the same texts (PostgreSQL + Redis by default, as in production).

    python -m bench.metering [--seconds 15] [--rounds 2] [--sqlite]

Goal: metering on >= 0.9 x metering off.
"""

import argparse
import json
import tempfile
import uuid
from pathlib import Path

import psycopg

from bench.corpus import load_texts
from bench.entities import start_server, wrk_rate

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sqlite", action="store_true", help="embedded SQLite instead")
    options = parser.parse_args()

    texts = load_texts(2000)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = {"SAAS_REDIS_URL": options.redis_url, "SAAS_REDIS_PREFIX": schema}
    if not options.sqlite:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        settings["SAAS_DATABASE_URL"] = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    rates: dict[str, list[float]] = {"off": [], "on": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            with open(workdir / "bodies.jsonl", "w", encoding="utf-8") as bodies:
                for text in texts:
                    bodies.write(json.dumps({"text": text}) + "\n")
            for _ in range(options.rounds):
                for mode in ("off", "on"):
                    metering = "true" if mode == "on" else "false"
                    server, key = start_server(
                        workdir, options.port, SAAS_USAGE_METERING=metering, **settings
                    )
                    try:
                        result = wrk_rate(
                            workdir, options.port, key, options.seconds, options.connections
                        )
                    finally:
                        server.terminate()
                        server.wait(30)
                    rates[mode].append(result["rps"])
    finally:
        if not options.sqlite:
            with psycopg.connect(POSTGRES, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
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
