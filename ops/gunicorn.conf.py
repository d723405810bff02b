"""Gunicorn in production: `gunicorn --config ops/gunicorn.conf.py`.

Gunicorn manages the worker processes (replaces one that dies, restarts them gracefully); each
worker is Uvicorn's event loop (PyPI `uvicorn-worker`; `uvicorn.workers` is deprecated) running
the app. Settings come from the same SAAS_* environment as everything else (saas/config.py):
SAAS_BIND, SAAS_WORKERS (default: CPU cores), SAAS_WORKER_TIMEOUT, SAAS_GRACEFUL_TIMEOUT,
SAAS_FORWARDED_ALLOW_IPS, SAAS_SHARE_MODELS, SAAS_KEEP_ALIVE_TIMEOUT (with SAAS_MAX_CONNECTIONS and
SAAS_MAX_HEADER_BYTES, see saas/server/protocol.py).

Memory: the app and, with SAAS_SHARE_MODELS (the default), the models are loaded once in the
master; each worker forks its inference process right after it is forked (saas/nlp/prefork.py),
so the model pages are shared by every process instead of copied per worker.

SIGTERM to the master: workers stop accepting, finish the requests in flight (up to
SAAS_GRACEFUL_TIMEOUT), commit the usage events they queued, close their inference processes
and exit; then the master exits 0.
"""

import os
import shutil
import tempfile
from typing import Any

from saas.config import get_settings

_settings = get_settings()

# /metrics adds up every worker (prometheus-client's multiprocess mode): each process writes its
# samples to this directory, which must exist, empty, before any metric is created, that is
# before the app is preloaded. Ours unless the environment names one.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="saas-metrics-")

from saas.kit import metrics  # noqa: E402 - after the variable: prometheus-client reads it on import
from saas.kit.logging import logging_config  # noqa: E402

metrics.prepare_multiprocess_dir()

wsgi_app = "saas.app:create_app()"
# uvicorn_worker.UvicornWorker, answering requests that arrive as it stops
# (saas/server/gunicorn_worker.py).
worker_class = "saas.server.gunicorn_worker.UvicornWorker"
bind = [address.strip() for address in _settings.bind.split(",")]
workers = _settings.workers or os.cpu_count() or 1
timeout = int(_settings.worker_timeout)
graceful_timeout = int(_settings.graceful_timeout)
# Uvicorn's options (keep-alive, the proxy whose X-Forwarded-For names the client, the HTTP
# protocol's limits) are the worker class's, from the same function as `saas serve`'s
# (saas/server/protocol.py: uvicorn_options), not Gunicorn's `keepalive` / `forwarded_allow_ips`.
# Import and build the app once, in the master: workers share those pages too.
preload_app = True
# Our request-context middleware writes one access line per request, with its request id;
# Gunicorn's and Uvicorn's own lines come out in the app's format (JSON with SAAS_LOG_JSON).
accesslog = None
logconfig_dict = logging_config(_settings.log_level, _settings.log_json)
proc_name = "saas"
# Gunicorn's control socket (`gunicornc`) is not used, and its default place, $HOME, is not
# writable for the image's user.
control_socket_disable = True


def on_starting(server: Any) -> None:
    if _settings.share_models:
        from saas.nlp import prefork

        prefork.preload(_settings.models)


def child_exit(server: Any, worker: Any) -> None:
    # A worker is gone: its live gauges (queue depth) leave the sum; its counters stay.
    metrics.worker_exited(worker.pid)


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_fork(server: Any, worker: Any) -> None:
    # The worker has one thread until its event loop starts: the one safe moment to fork.
    from saas.nlp import prefork

    prefork.fork_inference(
        _settings.engine_max_batch,
        _settings.engine_max_wait_ms / 1000,
        _settings.engine_wait_fraction,
        lanes=("short", "long") if _settings.engine_long_text_chars else ("short",),
    )
