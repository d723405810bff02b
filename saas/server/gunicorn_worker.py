"""Gunicorn's worker class (ops/gunicorn.conf.py): `uvicorn_worker.UvicornWorker`, except that
its shutdown answers a request whose connection was accepted an instant before.

At shutdown Uvicorn stops accepting, then closes every connection that has no request under way.
A connection accepted a moment earlier, whose request bytes have not been read yet, is one of
those: its client sent a complete request and gets the connection closed without an answer (the
rolling-restart test saw it about once in eight runs). Uvicorn has no setting for this, so the
server below first waits, briefly, for such connections to read their request; Uvicorn then
finishes those requests like any other in flight.
"""

import asyncio
import socket
import sys
from typing import Any

import uvicorn
import uvicorn_worker
from gunicorn.arbiter import Arbiter

from saas.config import get_settings
from saas.server.protocol import uvicorn_options

# A request follows its connection within a round trip; a connection still silent after this
# long is idle, and closing it is what HTTP allows (RFC 9112, section 9.6).
FIRST_REQUEST_GRACE = 0.5
_POLL = 0.01


def _awaiting_first_request(connection: object) -> bool:
    # Uvicorn's HTTP protocols (httptools and h11) create their `cycle` when a request's headers
    # have been read; before that it is None.
    return getattr(connection, "cycle", False) is None


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting; Uvicorn's shutdown repeats it harmlessly
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_REQUEST_GRACE
        while loop.time() < deadline and any(
            _awaiting_first_request(c) for c in self.server_state.connections
        ):
            await asyncio.sleep(_POLL)
        await super().shutdown(sockets)


class UvicornWorker(uvicorn_worker.UvicornWorker):  # type: ignore[misc]  # untyped base
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Uvicorn's options as `saas serve` gives them (saas/server/protocol.py), over those that
        # uvicorn_worker takes from Gunicorn's settings: httptools with the limits Uvicorn
        # lacks (Gunicorn's `worker_connections` does not apply to this worker class:
        # SAAS_MAX_CONNECTIONS does), the keep-alive timeout, the trusted proxies.
        self.CONFIG_KWARGS = {
            **uvicorn_worker.UvicornWorker.CONFIG_KWARGS,
            **uvicorn_options(get_settings()),
        }
        super().__init__(*args, **kwargs)

    async def _serve(self) -> None:
        # uvicorn_worker's own _serve, with the server above.
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
