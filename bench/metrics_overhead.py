"""What the Prometheus metrics add to one request, timed with timeit.

    python -m bench.metrics_overhead [--number 200000]

An entities request answered 200 touches, on its way (saas/kit/metrics.py):
  request      observe_request: the counter and latency histogram of its route, method, status
  key cache    one hit counted
  admission    one outcome counted
  usage        one event queued
  queue depth  the inference queue gauge set twice (text in, answer out)
and, shared by everything a micro-batch or a group commit holds, one batch observation (size and
time) and one commit time: counted here as if each request were alone in both, the worst case.
Measured in this process (prometheus-client's in-memory values, no PROMETHEUS_MULTIPROC_DIR) and
in a child process with the variable set (values in memory-mapped files, as under Gunicorn). For
scale: prometheus-client's own label lookup, `.labels(...)`, which observe_request avoids by
keeping the children it has looked up, and writing one JSON access line (to /dev/null).
Requests under /v1 or /admin that no route ran (404, or refused before routing without a
matching customer route, such as a bad admin key) also pay for finding their route template
among those routes: `unrouted_scan`, the worst case (no route matches). Public 404s do not.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit


def measure(number: int) -> dict[str, float]:
    """Microseconds per call of each part, and per request in all."""
    import structlog

    from saas.kit import metrics
    from saas.kit.logging import configure_logging

    route = "/v1/{model}/entities"

    def request() -> None:
        metrics.observe_request(route, "POST", 200, 0.012)

    def the_rest() -> None:
        metrics.KEY_CACHE_HIT.inc()
        metrics.ADMITTED.inc()
        metrics.USAGE_EVENTS_QUEUED.inc()
        metrics.INFERENCE_QUEUE.labels("short").set(1)
        metrics.INFERENCE_QUEUE.labels("short").set(0)
        metrics.observe_inference_batch("short", 1, 0.008)
        metrics.USAGE_COMMIT_SECONDS.observe(0.002)

    def labels_lookup() -> None:
        metrics.REQUESTS.labels(route, "POST", "200").inc()
        metrics.REQUEST_SECONDS.labels(route).observe(0.012)

    from saas.app import create_app
    from saas.config import Settings

    app = create_app(Settings(database_url="sqlite://", _env_file=None))
    endpoints = app.user_middleware[0].kwargs["endpoints"]  # the outermost: RequestContext
    unrouted = {"type": "http", "method": "GET", "path": "/admin/nothing", "root_path": ""}

    def unrouted_scan() -> None:
        endpoints.template(unrouted)

    with open(os.devnull, "w") as devnull:
        sys.stderr, stderr = devnull, sys.stderr
        try:
            configure_logging("INFO", json=True)
            log = structlog.get_logger("saas.access")

            def access_line() -> None:
                log.info("request", method="POST", route=route, status=200, duration_ms=12.3)

            timings = {
                name: min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
                for name, call in (
                    ("request", request),
                    ("the_rest", the_rest),
                    ("labels_lookup", labels_lookup),
                    ("access_line", access_line),
                    ("unrouted_scan", unrouted_scan),
                )
            }
        finally:
            sys.stderr = stderr
    timings["per_request"] = timings["request"] + timings["the_rest"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.number)))
        return
    in_memory = measure(args.number)
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.run(
            [sys.executable, "-m", "bench.metrics_overhead", "--child", f"--number={args.number}"],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
            capture_output=True,
            text=True,
            check=True,
        )
    files = json.loads(child.stdout)
    print(f"{'microseconds per call':32} {'in memory':>10} {'multiprocess':>13}")
    names = ("request", "the_rest", "per_request", "labels_lookup", "access_line", "unrouted_scan")
    for name in names:
        print(f"{name:32} {in_memory[name]:10.2f} {files[name]:13.2f}")


if __name__ == "__main__":
    main()
