"""saas/kit/logging.py: with JSON on, the standard library's records (Gunicorn's, Uvicorn's, any
library's) come out as the same JSON lines as the app's, on stderr; both servers' access logs
stay silent. Run in a subprocess: logging is global to a process.
(tests/e2e/test_observability.py checks a real `saas serve` with Uvicorn.)"""

import json
import secrets
import subprocess
import sys

import pytest

from saas.auth import key_format
from saas.kit.logging import logging_config

PROGRAM = """
import logging, logging.config, pickle, sys
import structlog
from saas.kit.logging import configure_logging, logging_config

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


# Secrets a request carries, where a failing request's frames and log calls would hold them.
LEAKY_PROGRAM = """
import logging, logging.config, sys
import structlog
from saas.kit.logging import configure_logging, logging_config

json_lines = sys.argv[1] == "json"
key, cookie, csrf, other_key, hook_token = sys.argv[2:7]
logging.config.dictConfig(logging_config("DEBUG", json=json_lines))
configure_logging("DEBUG", json=json_lines)

def handle(scope, form):
    api_key = key  # locals of the failing frames: what Rich's tracebacks printed
    session_cookie = cookie
    raise RuntimeError("the database is gone")

scope = {"headers": [(b"authorization", b"Bearer " + key.encode()), (b"cookie", cookie.encode())]}
form = {"csrf_token": csrf, "name": "a key"}
try:
    handle(scope, form)
except RuntimeError:
    structlog.get_logger("saas.pipeline.auth").exception("key_lookup_failed")
    # Uvicorn's own line for an exception that escaped the app, through the standard library.
    logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
try:
    raise ValueError(f"no such key {other_key}")  # a message that quotes a key
except ValueError:
    structlog.get_logger("saas").exception("unhandled_error")
structlog.get_logger("saas").warning(
    "fields",
    authorization=f"Token {key}",
    x_api_key=key,
    headers={"X-API-Key": key, "Cookie": f"saas_session={cookie}", "Accept": "text/html"},
    raw_headers=scope["headers"],
    form=form,
    saas_session=cookie,
    note=f"presented {other_key} twice",
    error=PermissionError(f"refused {other_key}"),  # written as its repr
)
logging.getLogger("some.library").warning("connecting with %s", other_key)

# A quota alert's POST: httpx logs each request's URL, and webhook URLs carry credentials.
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import httpx

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.handle_request, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/{hook_token}"
assert httpx.post(url, json={"threshold_percent": 80}).status_code == 204
"""


@pytest.mark.parametrize("mode", ["json", "console"])
def test_no_secret_reaches_a_line_in_either_format(mode: str) -> None:
    """A failing request's key, cookie and CSRF token are in its frames' locals, its headers and
    its form: none of them may come out, from the app's lines or the standard library's."""
    key, other_key = key_format.generate_key(), key_format.generate_key()
    cookie, csrf, hook = (secrets.token_urlsafe(32) for _ in range(3))
    result = subprocess.run(
        [sys.executable, "-c", LEAKY_PROGRAM, mode, key, cookie, csrf, other_key, hook],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output = result.stdout + result.stderr
    secret_part = key[len(key_format.display_prefix(key)) :]
    for secret in (key, secret_part, cookie, csrf, other_key, hook):
        assert secret not in output, f"{secret[:12]}... in the {mode} log:\n{output}"
    # What the lines still tell: the tracebacks, the events, which fields were there.
    assert output.count("RuntimeError: the database is gone") == 2, output
    assert "ValueError: no such key sk_live_[redacted]" in output
    for event in ("key_lookup_failed", "Exception in ASGI application", "fields"):
        assert event in output
    assert "[redacted]" in output and "text/html" in output and "a key" in output
    assert "connecting with sk_live_[redacted]" in output
    if mode == "json":
        records = [json.loads(line) for line in result.stderr.splitlines()]
        fields = next(r for r in records if r["event"] == "fields")
        named = (fields["authorization"], fields["x_api_key"], fields["saas_session"])
        assert named == ("[redacted]",) * 3
        assert fields["headers"] == {
            "X-API-Key": "[redacted]",
            "Cookie": "[redacted]",
            "Accept": "text/html",
        }
        assert fields["form"] == {"csrf_token": "[redacted]", "name": "a key"}
