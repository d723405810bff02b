"""Prometheus metrics of one server, correct across Gunicorn or Uvicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (it must be set before this module is first imported, as
prometheus-client decides then), each worker process writes its samples to files of its own in
that directory and `/metrics`, whichever worker answers it, adds up all of them; without it,
`/metrics` shows this one process (its default registry). The server that starts the workers
empties the directory first (`prepare_multiprocess_dir`) and reports each worker that exits
(`worker_exited`), so that a dead worker's live gauges stop counting.

Labels are bounded and carry nothing about a customer: a route template (never the raw path,
so never a model name a client typed), a normalised method, a status, or one of a few fixed
words. Never a key, an account, a text.

Imports nothing of the project: every layer may count.
"""

import os
from pathlib import Path

# Decided once, as prometheus-client decides how to store values when it is first imported
# (just below). Each metric then opens its file at once: the directory must exist.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROCESS_DIR is not None:
    os.makedirs(MULTIPROCESS_DIR, exist_ok=True)

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402
from prometheus_client import multiprocess as _multiprocess  # noqa: E402
from prometheus_client.exposition import choose_encoder  # noqa: E402

UNROUTED = "unrouted"  # the route label of a request that reached no route (404, redirects)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "saas_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "saas_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template.",
    ["route"],
)

# `lane`: short or long (SAAS_ENGINE_LONG_TEXT_CHARS, saas/nlp/pool.py).
INFERENCE_BATCH_TEXTS = Histogram(
    "saas_inference_batch_texts",
    "Texts in each micro-batch the inference process ran, by lane.",
    ["lane"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
INFERENCE_BATCH_SECONDS = Histogram(
    "saas_inference_batch_seconds",
    "Time the inference process spent on each micro-batch (nlp.pipe and serialising), by lane.",
    ["lane"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INFERENCE_QUEUE = Gauge(
    "saas_inference_queue_texts",
    "Texts waiting for or in inference (summed over the live workers), by lane.",
    ["lane"],
    multiprocess_mode="livesum",
)

_ADMISSIONS = Counter(
    "saas_admission",
    "Admission decisions: admitted; rate_limited (429); quota_exhausted (402); fail_open "
    "(admitted by the worker's own limiter while Redis is unreachable); unavailable (503, "
    "Redis unreachable and SAAS_LIMITER_FAIL_OPEN=false).",
    ["outcome"],
)
ADMITTED = _ADMISSIONS.labels("admitted")
RATE_LIMITED = _ADMISSIONS.labels("rate_limited")
QUOTA_EXHAUSTED = _ADMISSIONS.labels("quota_exhausted")
FAIL_OPEN = _ADMISSIONS.labels("fail_open")
LIMITER_UNAVAILABLE = _ADMISSIONS.labels("unavailable")

_REDIS_ERRORS = Counter(
    "saas_redis_errors",
    "Failed Redis calls, by component (limiter, auth_guard, dashboard_writes, invalidation).",
    ["component"],
)
REDIS_ERRORS_LIMITER = _REDIS_ERRORS.labels("limiter")
REDIS_ERRORS_AUTH_GUARD = _REDIS_ERRORS.labels("auth_guard")
REDIS_ERRORS_DASHBOARD_WRITES = _REDIS_ERRORS.labels("dashboard_writes")
REDIS_ERRORS_INVALIDATION = _REDIS_ERRORS.labels("invalidation")

_DATABASE_ERRORS = Counter(
    "saas_database_errors",
    "Failed database work, by component (keys: lookups and last-used writes; usage: event "
    "commits; alerts: quota alerts).",
    ["component"],
)
DATABASE_ERRORS_KEYS = _DATABASE_ERRORS.labels("keys")
DATABASE_ERRORS_USAGE = _DATABASE_ERRORS.labels("usage")
DATABASE_ERRORS_ALERTS = _DATABASE_ERRORS.labels("alerts")

USAGE_EVENTS_QUEUED = Counter("saas_usage_events_queued", "Usage events queued for the ledger.")
USAGE_EVENTS_DROPPED = Counter(
    "saas_usage_events_dropped",
    "Non-billable usage events lost to a failed commit (a billable one fails its request "
    "instead: 503, nothing billed).",
)
USAGE_COMMIT_SECONDS = Histogram(
    "saas_usage_commit_seconds",
    "Time of each group commit of usage events (successful ones).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

_KEY_CACHE = Counter(
    "saas_key_cache_lookups",
    "API key lookups answered by the worker's cache (hit, known or unknown key) or not (miss: "
    "a database query, or waiting for one already under way).",
    ["result"],
)
KEY_CACHE_HIT = _KEY_CACHE.labels("hit")
KEY_CACHE_MISS = _KEY_CACHE.labels("miss")

# Labelled children already looked up, so a request costs one dict lookup instead of
# prometheus-client's label validation under its lock. Bounded: the keys are route templates,
# the methods above, and statuses.
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request. `route` is a route template or UNROUTED."""
    children = _request_children.get((route, method, status))
    if children is None:
        label = method if method in _METHODS else "OTHER"  # methods are whatever clients send
        children = (REQUESTS.labels(route, label, str(status)), REQUEST_SECONDS.labels(route))
        if method in _METHODS:
            _request_children[(route, method, status)] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_inference_batch(lane: str, texts: int, seconds: float | None) -> None:
    INFERENCE_BATCH_TEXTS.labels(lane).observe(texts)
    if seconds is not None:
        INFERENCE_BATCH_SECONDS.labels(lane).observe(seconds)


def render(accept: str = "") -> tuple[bytes, str]:
    """The exposition of every worker (multiprocess mode) or of this process, and its content
    type: Prometheus's text format 0.0.4, or OpenMetrics when the scraper's Accept asks for it."""
    encode, content_type = choose_encoder(accept)
    if MULTIPROCESS_DIR is None:
        return encode(REGISTRY), content_type
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    return encode(registry), content_type


def prepare_multiprocess_dir(path: str | os.PathLike[str] | None = None) -> None:
    """Create the directory (default: $PROMETHEUS_MULTIPROC_DIR), or empty it of an earlier
    run's samples (prometheus-client requires a clean directory at start-up: files of dead
    processes would be added up forever). Call it in the process that starts the workers, before
    any of them starts (Gunicorn: on_starting)."""
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def worker_exited(pid: int) -> None:
    """A worker process is gone: drop its live gauges (the queue depth), keep its counters.
    For Gunicorn's child_exit hook (the master reads the variable now, wherever it imported
    this module); the app also calls it for its own process at shutdown."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or MULTIPROCESS_DIR
    if path:
        _multiprocess.mark_process_dead(pid, path=path)
