"""What redacting secrets costs a log line, side by side in one run.

    python -m bench.log_redaction [--lines 20000] [--rounds 15]

The access line every request writes (saas/pipeline/request_context.py), through the app's
processors in both formats (saas/kit/logging.py) to /dev/null, with and without `redact_secrets`,
the two chains taking turns round after round (the machine is shared: only interleaved runs
compare). Prints the median microseconds per line of each, the difference and the ratio; saves
bench/results/log_redaction.json.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import structlog

from saas.kit import logging as saas_logging

RESULTS = Path(__file__).parent / "results" / "log_redaction.json"
ACCESS_LINE: dict[str, Any] = {
    "method": "POST",
    "route": "/v1/{model}/entities",
    "path": "/v1/en_core_web_sm/entities",
    "status": 200,
    "duration_ms": 12.34,
    "request_id": "5f0c6a1e2b7d4c3f9a8e1d2c3b4a5f6e",
    "account_id": 1234,
    "key_id": 5678,
}


def logger(json_lines: bool, redact: bool, sink: Any) -> Any:
    processors = [
        p
        for p in saas_logging._render(json_lines)
        if redact or p is not saas_logging.redact_secrets
    ]
    chain = [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        saas_logging._timestamper(),
        *processors,
    ]
    writer = structlog.WriteLogger(sink)
    writer.name = "saas.access"  # type: ignore[attr-defined]  # what add_logger_name reads
    return structlog.wrap_logger(writer, processors=chain, wrapper_class=structlog.BoundLogger)


def per_line(log: Any, lines: int) -> float:
    started = time.perf_counter()
    for _ in range(lines):
        log.info("request", **ACCESS_LINE)
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, Any] = {"lines_per_round": args.lines, "rounds": args.rounds}
    with open(os.devnull, "w") as sink:
        for mode in ("json", "console"):
            loggers = {redact: logger(mode == "json", redact, sink) for redact in (False, True)}
            samples: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for redact, log in loggers.items():
                    samples[redact].append(per_line(log, args.lines))
            without, with_ = (statistics.median(samples[r]) for r in (False, True))
            results[mode] = {
                "us_per_line_without": round(without, 2),
                "us_per_line_with": round(with_, 2),
                "added_us": round(with_ - without, 2),
                "ratio": round(with_ / without, 3),
            }
            print(
                f"{mode:8} without {without:6.2f} us/line   with {with_:6.2f} us/line   "
                f"+{with_ - without:.2f} us ({with_ / without:.3f} x)"
            )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
