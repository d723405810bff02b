"""saas/logging.py: with JSON on, the standard library's records (Gunicorn's, Uvicorn's, any
library's) come out as the same JSON lines as the app's, on stderr; both servers' access logs
stay silent. Run in a subprocess: logging is global to a process.
(tests/e2e/test_observability.py checks a real `saas serve` with Uvicorn.)"""

import json
import subprocess
import sys

from saas.logging import logging_config

PROGRAM = """
import logging, logging.config, pickle, sys
import structlog
from saas.logging import configure_logging, logging_config

config = logging_config("INFO", json=True)
assert pickle.loads(pickle.dumps(config)) == config  # Uvicorn pickles it for its workers
# What Gunicorn does first: a plain handler of its own on its error log, replaced by the dict.
logging.getLogger("gunicorn.error").addHandler(logging.StreamHandler(sys.stderr))
logging.config.dictConfig(config)
configure_logging("INFO", json=True)

logging.getLogger("gunicorn.error").info("Booting worker with pid: %s", 42)
logging.getLogger("gunicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
logging.getLogger("uvicorn.error").warning("Started server process [%d]", 7)
logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
logging.getLogger("sqlalchemy.pool").error("a library speaks")
logging.getLogger("gunicorn.error").debug("below the level")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("gunicorn.error").exception("Exception in worker process")
structlog.get_logger("saas.access").info("request", status=200, route="/healthz")
# Values orjson does not take as they are: written as the standard library's encoder would.
structlog.get_logger("saas.odd").info("odd", error=TimeoutError(), counts={2: 1}, big=2**70)
"""


def test_server_and_library_lines_are_the_apps_json() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    records = [json.loads(line) for line in result.stderr.splitlines()]  # each one parses
    assert [(r["logger"], r["level"], r["event"]) for r in records] == [
        ("gunicorn.error", "info", "Booting worker with pid: 42"),
        ("uvicorn.error", "warning", "Started server process [7]"),
        ("sqlalchemy.pool", "error", "a library speaks"),
        ("gunicorn.error", "error", "Exception in worker process"),
        ("saas.access", "info", "request"),
        ("saas.odd", "info", "odd"),
    ]
    assert all(record["timestamp"].endswith("Z") for record in records)
    assert "ZeroDivisionError" in records[3]["exception"]
    assert records[4]["status"] == 200
    assert records[5]["error"] == "TimeoutError()" and records[5]["big"] == 2**70


def test_access_logs_of_both_servers_are_off_and_levels_follow_the_setting() -> None:
    config = logging_config("warning")
    loggers = config["loggers"]
    for name in ("gunicorn.access", "uvicorn.access"):
        assert loggers[name]["handlers"] == [] and not loggers[name]["propagate"]
    assert config["root"]["level"] == loggers["gunicorn.error"]["level"] == "WARNING"
    assert json.loads(json.dumps(config)) == config  # plain values: printable, picklable
