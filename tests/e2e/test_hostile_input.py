"""Hostile clients against real servers, where the transport decides what happens: huge and
endless bodies, huge and endless headers, thousands of idle connections. Each answer must come
quickly and the worker must answer a normal request afterwards. Both ways the service runs:
`saas serve` (Uvicorn) and Gunicorn with our worker class (ops/gunicorn.conf.py); both use
saas/server/protocol.py. What is tried in-process (bad JSON, Unicode): tests/pipeline/."""

import contextlib
import errno
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from saas.problems.responses import UNPARSABLE_BODY
from tests.support.apps import wait_until_ready
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually
from tests.support.problems import assert_problem
from tests.support.servers import free_port, start_process, stop_process

BIN = Path(sys.executable).parent
GUNICORN_CONFIG = str(Path(__file__).resolve().parents[2] / "ops" / "gunicorn.conf.py")
ENTITIES = f"/v1/{MODEL}/entities"
TEXT = "John Doe is a Go developer at Google in London."

# Small limits, so that a test waits seconds, not the defaults' half minute.
BODY_TIMEOUT = 1.0
KEEP_ALIVE_TIMEOUT = 1
MAX_CONNECTIONS = 500
# An error status must arrive within this (measured: under 0.1 s; the machine is shared).
QUICK = 2.0
# A timeout may fire this much later than set (timer, scheduling, a loaded machine).
LATE = 2.0
IDLE_CONNECTIONS = 10_000


@dataclass
class Server:
    base: str
    port: int
    key: str

    @property
    def auth(self) -> bytes:
        return f"Authorization: Token {self.key}\r\n".encode()


def raise_open_files_limit(needed: int) -> None:
    """At least `needed` file descriptors for this process (and the servers it starts), within
    the hard limit; fails, never skips, when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"needs {needed} open files; the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(scope="module", params=["serve", "gunicorn"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    raise_open_files_limit(IDLE_CONNECTIONS + 1000)
    port = free_port()
    env = {
        **os.environ,
        "SAAS_DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'saas.kit.db'}",
        "SAAS_MODELS": json.dumps(ENGLISH_ONLY),
        "SAAS_LOG_LEVEL": "WARNING",
        "SAAS_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "SAAS_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
        "SAAS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "SAAS_BIND": f"127.0.0.1:{port}",
        "SAAS_WORKERS": "1",
    }
    env.pop("SAAS_REDIS_URL", None)
    boot = subprocess.run(
        [str(BIN / "saas"), "bootstrap"], env=env, capture_output=True, text=True, check=True
    )
    # The admin account's plan allows 1000 requests a second: no test here meets a limit.
    keys = {line.split()[0]: line.split()[-1] for line in boot.stdout.splitlines()}
    if request.param == "serve":
        args = [str(BIN / "saas"), "serve", "--port", str(port)]
    else:
        args = [str(BIN / "gunicorn"), "--config", GUNICORN_CONFIG]
    process = start_process(args, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield Server(base, port, keys["admin"])
    finally:
        stop_process(process)


def assert_healthy(server: Server) -> None:
    """A normal request still gets its normal answer, quickly."""
    started = time.monotonic()
    response = httpx.post(
        server.base + ENTITIES,
        json={"text": TEXT},
        headers={"Authorization": f"Token {server.key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert [e["text"] for e in response.json()["entities"]] == ["John Doe", "Google", "London"]
    assert time.monotonic() - started < QUICK


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def response(self) -> httpx.Response:
        """As httpx's, for assert_problem."""
        return httpx.Response(self.status, headers=self.headers, content=self.body)


def exchange(port: int, request: bytes, timeout: float = 10) -> Answer:
    """Send raw bytes (from a thread: the server may answer, and stop reading, before the
    client has sent everything) and read one HTTP/1.1 answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(timeout)
    started = time.monotonic()

    def send() -> None:
        # The server may answer and close before all is sent: what is read below decides.
        with contextlib.suppress(OSError):
            sock.sendall(request)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            body += chunk
        seconds = time.monotonic() - started
        # Nothing follows the answer (the rest of a refused body is not another request).
        assert body[length:] + _rest(sock, 0.3) == b""
        return Answer(int(status_line.split()[1]), headers, body, seconds)
    finally:
        sock.close()
        sender.join(timeout)


def post(server: Server, headers: bytes, body: bytes = b"") -> bytes:
    return (
        f"POST {ENTITIES} HTTP/1.1\r\nHost: test\r\n".encode()
        + server.auth
        + b"Content-Type: application/json\r\n"
        + headers
        + b"\r\n"
        + body
    )


TEN_MB = 10 * 1024 * 1024


def test_a_10_mb_body_with_its_length_declared_is_refused_at_once(server: Server) -> None:
    answer = exchange(server.port, post(server, b"Content-Length: %d\r\n" % TEN_MB, b"x" * TEN_MB))
    assert answer.status == 413
    assert b"Request body is larger than" in answer.body
    assert_problem(answer.response(), "body_too_large", limit=1_000_000)
    assert answer.seconds < QUICK
    assert_healthy(server)


def test_a_10_mb_chunked_body_is_refused_once_over_the_limit(server: Server) -> None:
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    body = chunk * (TEN_MB // 65536) + b"0\r\n\r\n"
    for path in (ENTITIES, ENTITIES + "/batch"):  # the batch body is read by admission first
        request = post(server, b"Transfer-Encoding: chunked\r\n", body)
        answer = exchange(server.port, request.replace(ENTITIES.encode(), path.encode(), 1))
        assert answer.status == 413, (path, answer)
        assert b"Request body is larger than" in answer.body
        assert answer.seconds < QUICK
    assert_healthy(server)


DEPTH = 100_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (ENTITIES, b'{"text": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"),
        (ENTITIES, b'{"a": ' * DEPTH + b"1" + b"}" * DEPTH),
        # Batches are also parsed by admission (saas/pipeline/batch_body.py) to count texts.
        (ENTITIES + "/batch", b'{"texts": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"),
        (ENTITIES + "/batch", b'{"texts": ["a", ' + b"[" * DEPTH + b"]" * DEPTH + b"]}"),
    ],
    ids=["text", "object", "texts", "inside-texts"],
)
def test_json_nested_100000_deep_is_422(server: Server, path: str, body: bytes) -> None:
    # FastAPI's parser (json.loads) stops with RecursionError: it answered a vague 400 before.
    request = post(server, b"Content-Length: %d\r\n" % len(body), body)
    answer = exchange(server.port, request.replace(ENTITIES.encode(), path.encode(), 1))
    assert answer.status == 422, answer
    assert_problem(answer.response(), "invalid_json", UNPARSABLE_BODY)
    assert answer.seconds < QUICK
    assert_healthy(server)


def test_100_headers_of_8_kb_get_431(server: Server) -> None:
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 8192) for i in range(100))
    answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
    assert answer.status == 431
    detail = "Request headers are too large."
    assert_problem(answer.response(), "headers_too_large", detail, limit=65_536)
    assert answer.headers["connection"] == "close"
    assert answer.seconds < QUICK
    assert_healthy(server)


def test_a_slowloris_body_gets_408_while_others_are_served(server: Server) -> None:
    """One byte a second of a declared 100: the body's deadline answers 408 and closes."""
    for path in (ENTITIES, ENTITIES + "/batch"):  # the batch body is read by admission first
        sock = socket.create_connection(("127.0.0.1", server.port))
        request = post(server, b"Content-Length: 100\r\n")
        sock.sendall(request.replace(ENTITIES.encode(), path.encode(), 1))
        sock.settimeout(0.05)
        started = time.monotonic()
        received = b""
        sent = 0
        while b"\r\n\r\n" not in received and time.monotonic() - started < BODY_TIMEOUT + LATE:
            if time.monotonic() - started >= sent:  # one byte a second
                try:
                    sock.sendall(b" ")
                except OSError:
                    break
                sent += 1
            assert_healthy(server)  # others are served while the slow one is open
            with contextlib.suppress(TimeoutError):
                received += sock.recv(65536)
        seconds = time.monotonic() - started
        received += _rest(sock)
        sock.close()
        assert received.startswith(b"HTTP/1.1 408 "), (path, received)
        assert b'"detail":"Request body did not arrive within 1 s."' in received
        assert b'"code":"request_timeout"' in received
        assert b"content-type: application/problem+json" in received.lower()
        assert b"connection: close" in received.lower()
        assert BODY_TIMEOUT - 0.5 < seconds < BODY_TIMEOUT + LATE
    assert_healthy(server)


def _rest(sock: socket.socket, timeout: float = LATE) -> bytes:
    """What the server still sends until it closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def test_slowloris_headers_are_cut_off_after_the_keep_alive_timeout(server: Server) -> None:
    """A byte of header every 0.2 s never completes a request: the connection is closed once
    the keep-alive timeout has passed since it opened, however many bytes trickled in."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(0.05)
    started = time.monotonic()
    closed_after = None
    for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            pass
        except OSError:
            closed_after = time.monotonic() - started
            break
        if time.monotonic() - started > KEEP_ALIVE_TIMEOUT + LATE:
            break
        time.sleep(0.2)  # the slow client's pace: a byte every 0.2 s
    sock.close()
    assert closed_after is not None, "a connection sending its headers slowly stayed open"
    assert KEEP_ALIVE_TIMEOUT - 0.5 < closed_after < KEEP_ALIVE_TIMEOUT + LATE
    assert_healthy(server)


def test_10000_idle_connections_are_bounded_and_closed(server: Server) -> None:
    """10,000 connections that send nothing: the worker keeps at most SAAS_MAX_CONNECTIONS of
    them, still answers a normal request meanwhile, and closes the rest after the keep-alive
    timeout."""
    started = time.monotonic()
    connections: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS // 500):
            connections += connect_all(server.port, 500)
        opened = time.monotonic() - started
        assert_healthy(server)

        def open_count() -> int:
            return sum(is_open(sock) for sock in connections)

        assert eventually(lambda: open_count() <= MAX_CONNECTIONS, LATE, 0.1), open_count()
        until_closed = started + opened + KEEP_ALIVE_TIMEOUT + LATE - time.monotonic()
        assert eventually(lambda: open_count() == 0, until_closed, 0.1), (
            f"{open_count()} idle connections still open"
        )
        closed = time.monotonic() - started
        print(f"idle: {IDLE_CONNECTIONS} opened in {opened:.1f} s, all closed after {closed:.1f} s")
    finally:
        for sock in connections:
            sock.close()
    assert_healthy(server)


def connect_all(port: int, count: int) -> list[socket.socket]:
    """`count` connections, opened at once (non-blocking, raw sockets: cheap for the client)."""
    sockets = []
    poller = select.poll()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        sockets.append(sock)
        poller.register(sock, select.POLLOUT)
    pending = {sock.fileno() for sock in sockets}
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            pending.discard(fd)
            poller.unregister(fd)
    assert not pending, f"{len(pending)} of {count} connections not established"
    for sock in sockets:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return sockets


def is_open(sock: socket.socket) -> bool:
    """Not closed by the server (which sends nothing before closing an idle connection)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
