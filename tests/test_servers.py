"""The test harness's private servers (tests/support/servers.py): a port found free but taken before
redis-server binds it (by any socket the machine opened meanwhile) costs a retry on another
port, not a failed test."""

import socket
from pathlib import Path

from tests.support.servers import RedisServer, free_port


def test_a_redis_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        picks = iter([taken, free_port()])
        server = RedisServer(tmp_path, pick_port=lambda: next(picks))
        assert server.port == taken
        server.start()
        try:
            assert server.port != taken
            started_on = server.port
            server.kill()
            server.start()  # once started, a restart keeps its port
            assert server.port == started_on
        finally:
            server.stop()
