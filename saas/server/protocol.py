"""Uvicorn's HTTP protocol (httptools) with the limits it lacks, for `saas serve` and the Gunicorn
worker alike (both name this class as Uvicorn's `http`).

Uvicorn, as of 0.54, bounds none of these (tests/e2e/test_hostile_input.py shows each):
- a connection that sends nothing, or its headers a byte at a time, is never closed: its
  keep-alive timer starts only after an answer, and any byte received cancels it;
- open connections: `limit_concurrency` answers 503 to requests, but only once their headers
  have arrived, so idle connections pile up until the process runs out of file descriptors;
- the size of a request's headers (httptools takes them all; h11 has its own limit).
Its own 400 for a request httptools cannot parse is plain text: here it is problem details, as
every error of the API (saas/problems/__init__.py).
No timer and no call per header is added to Uvicorn's: a no-op app serves 0.96 times the
requests/s of Uvicorn's own protocol (bench/hostile_overhead.py; spaCy requests take ms).

Settings (saas/config.py): SAAS_KEEP_ALIVE_TIMEOUT, SAAS_MAX_CONNECTIONS, SAAS_MAX_HEADER_BYTES.
`uvicorn_options` is everything both servers tell Uvicorn, this protocol included.
"""

import asyncio
import functools
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from saas import problems
from saas.config import Settings, get_settings

# Uvicorn's `http` as an import string: `saas serve --workers N` spawns processes that import it.
GUARDED_HTTP = f"{__name__}:GuardedHttpToolsProtocol"
HEADERS_TOO_LARGE = "Request headers are too large."


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Uvicorn's options under `saas serve` (uvicorn.run) and Gunicorn (gunicorn_worker.py) alike,
    built here once so that the two cannot drift. Whose X-Forwarded-For and -Proto to believe
    is SAAS_FORWARDED_ALLOW_IPS: left out, Uvicorn would trust its own environment variable or
    loopback, and any local process could pick the address the failed-key guard counts and the
    scheme that marks the dashboard's cookie Secure."""
    return {
        "http": GUARDED_HTTP,
        "loop": "auto",  # uvloop, installed with uvicorn[standard]
        "timeout_keep_alive": settings.keep_alive_timeout,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_connections = settings.max_connections
        self.max_header_bytes = settings.max_header_bytes
        self.root_path = settings.root_path  # no scope yet for a 431: the app's, from settings
        # Between a connection's start (or an answer) and a request's complete headers.
        self.awaiting_headers = True
        self.header_bytes = 0
        # A request's body is still arriving (also after its answer, e.g. a 413).
        self.body_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._make_room()
        # Uvicorn arms its keep-alive timer only after an answer: a connection that never
        # sends a request would stay open for ever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.awaiting_headers = False  # so that the keep-alive timer is cancelled
        super().connection_lost(exc)

    def _unset_keepalive_if_required(self) -> None:
        # Uvicorn cancels its keep-alive timer on every byte received, so a client sending a
        # header byte now and then holds the connection for ever (slowloris). Keep it running
        # until the request's headers are complete: the timeout is then the time a connection
        # gets to send them. Uvicorn's own method (private; tests/e2e/test_hostile_input.py
        # fails if a Uvicorn release stops calling it).
        if not self.awaiting_headers:
            super()._unset_keepalive_if_required()

    def data_received(self, data: bytes) -> None:
        # Only a read that went to headers counts towards SAAS_MAX_HEADER_BYTES: not the end of
        # a body, even one answered early (413), which runs on the same timer.
        counts = self.awaiting_headers and not self.body_pending
        super().data_received(data)
        # Headers still incomplete after this read: count it (httptools keeps them all).
        if counts and self.awaiting_headers and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                self._refuse_headers()

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self.header_bytes = 0
        self.body_pending = True
        super()._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.body_pending = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms the keep-alive timer, unless closing
        # Now waiting for the next request's headers, unless a pipelined one has them already.
        self.awaiting_headers = self.cycle.response_complete

    def _refuse_headers(self) -> None:
        self._refuse(431, headers_too_large(self.root_path, self.max_header_bytes))

    def send_400_response(self, msg: str) -> None:
        # Uvicorn's, for a request httptools cannot parse (`msg` says no more than the title).
        self._refuse(400, invalid_request(self.root_path))

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer with problem details and close: the rest of what arrives cannot be read as
        requests."""
        head = b"content-type: %s\r\ncontent-length: %d\r\n" % (
            problems.MEDIA_TYPE.encode(),
            len(body),
        )
        self.transport.write(STATUS_LINE[status] + head + b"connection: close\r\n\r\n" + body)
        self.transport.close()

    def _make_room(self) -> None:
        """Close one connection that waits for a request (new, idle between requests or still
        sending headers) so that this one is served; when every other one has a request under
        way, close this one instead. Idle connections must not lock customers out."""
        for connection in self.connections:
            if connection is not self and _idle(connection):
                connection.transport.close()
                return
        self.transport.close()


@functools.cache
def invalid_request(root_path: str) -> bytes:
    detail = "Invalid HTTP request received."  # Uvicorn's words
    return problems.render(problems.INVALID_REQUEST, detail, root_path)


@functools.cache
def headers_too_large(root_path: str, limit: int) -> bytes:
    """The 431's problem details, rendered once."""
    return problems.render(
        problems.HEADERS_TOO_LARGE, HEADERS_TOO_LARGE, root_path, {"limit": limit}
    )


def _idle(connection: object) -> bool:
    """Open, with no request under way (the set also holds WebSocket protocols, and
    connections already closing until their loss is reported)."""
    transport = getattr(connection, "transport", None)
    if transport is None or transport.is_closing():
        return False
    return getattr(connection, "awaiting_headers", False) is True
