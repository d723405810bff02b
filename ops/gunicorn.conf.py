"""Gunicorn in production: `gunicorn --config ops/gunicorn.conf.py`.

Gunicorn manages the worker processes (replaces one that dies, restarts them gracefully); each
worker is Uvicorn's event loop (PyPI `uvicorn-worker`; `uvicorn.workers` is deprecated) running
the app. Settings come from the same SAAS_* environment as everything else (saas/config.py):
SAAS_BIND, SAAS_WORKERS (default: CPU cores), SAAS_WORKER_TIMEOUT, SAAS_GRACEFUL_TIMEOUT,
SAAS_FORWARDED_ALLOW_IPS, SAAS_SHARE_MODELS.

Memory: the app and, with SAAS_SHARE_MODELS (the default), the models are loaded once in the
master; each worker forks its inference process right after it is forked (saas/nlp/prefork.py),
so the model pages are shared by every process instead of copied per worker.

SIGTERM to the master: workers stop accepting, finish the requests in flight (up to
SAAS_GRACEFUL_TIMEOUT), commit the usage events they queued, close their inference processes
and exit; then the master exits 0.
"""

import os

from saas.config import get_settings

_settings = get_settings()

wsgi_app = "saas.app:create_app()"
worker_class = "uvicorn_worker.UvicornWorker"
bind = [address.strip() for address in _settings.bind.split(",")]
workers = _settings.workers or os.cpu_count() or 1
timeout = int(_settings.worker_timeout)
graceful_timeout = int(_settings.graceful_timeout)
keepalive = 5
# The proxy's address: X-Forwarded-For from it names the client (the failed-key guard and the
# access log see the customer's address); from anyone else it is ignored.
forwarded_allow_ips = _settings.forwarded_allow_ips
# Import and build the app once, in the master: workers share those pages too.
preload_app = True
# Our request-context middleware writes one access line per request, with its request id.
accesslog = None
proc_name = "saas"
# Gunicorn's control socket (`gunicornc`) is not used, and its default place, $HOME, is not
# writable for the image's user.
control_socket_disable = True


def on_starting(server: object) -> None:
    if _settings.share_models:
        from saas.nlp import prefork

        prefork.preload(_settings.models)


def post_fork(server: object, worker: object) -> None:
    # The worker has one thread until its event loop starts: the one safe moment to fork.
    from saas.nlp import prefork

    prefork.fork_inference(
        _settings.engine_max_batch,
        _settings.engine_max_wait_ms / 1000,
        _settings.engine_wait_fraction,
    )
