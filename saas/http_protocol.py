"""Uvicorn's HTTP protocol (httptools) with the limits it lacks, for `saas serve` and the Gunicorn
worker alike (both name this class as Uvicorn's `http`).

Uvicorn, as of 0.54, bounds none of these (tests/e2e/test_hostile_input.py shows each):
- a connection that sends nothing, or its headers a byte at a time, is never closed: its
  keep-alive timer starts only after an answer, and any byte received cancels it;
- open connections: `limit_concurrency` answers 503 to requests, but only once their headers
  have arrived, so idle connections pile up until the process runs out of file descriptors;
- the size of a request's headers (httptools takes them all; h11 has its own limit).

Settings (saas/config.py): SAAS_KEEP_ALIVE_TIMEOUT, SAAS_MAX_CONNECTIONS, SAAS_MAX_HEADER_BYTES.
"""

import asyncio
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from saas.config import get_settings

# Uvicorn's `http` as an import string: `saas serve --workers N` spawns processes that import it.
GUARDED_HTTP = f"{__name__}:GuardedHttpToolsProtocol"
HEADERS_TOO_LARGE = orjson.dumps({"detail": "Request headers are too large."})


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
        self.header_timeout = settings.keep_alive_timeout
        self.header_deadline: asyncio.TimerHandle | None = None
        self.header_bytes = 0
        self.headers_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._make_room()
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request (none pipelined): its headers get the same deadline.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_headers()

    def send_400_response(self, msg: str) -> None:
        # The parser stops on the error _count_header_bytes raises, and Uvicorn answers 400
        # for any parser error: name the real reason instead, as JSON like every other error.
        if not self.headers_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(HEADERS_TOO_LARGE),
                    b"connection: close\r\n\r\n",
                    HEADERS_TOO_LARGE,
                ]
            )
        )
        self.transport.close()

    def _count_header_bytes(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > self.max_header_bytes:
            self.headers_too_large = True
            raise ValueError("request headers too large")  # httptools: a parser error

    def _await_headers(self) -> None:
        # A deadline that bytes do not push back, unlike Uvicorn's keep-alive timer: a client
        # sending one header byte a second would otherwise hold the connection forever.
        self._cancel_header_deadline()
        self.header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _cancel_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _make_room(self) -> None:
        """Close one connection that waits for a request (new, idle between requests or still
        sending headers) so that this one is served; when every other one has a request under
        way, close this one instead. Idle connections must not lock customers out."""
        for connection in self.connections:
            if connection is not self and _idle(connection):
                connection.transport.close()
                return
        self.transport.close()


def _idle(connection: object) -> bool:
    """Open, with no request under way (the set also holds WebSocket protocols, and
    connections already closing until their loss is reported)."""
    transport = getattr(connection, "transport", None)
    if transport is None or transport.is_closing():
        return False
    cycle = getattr(connection, "cycle", False)
    return cycle is None or bool(getattr(cycle, "response_complete", False))
