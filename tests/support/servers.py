"""The PostgreSQL and Redis servers the suite runs against, and the process helpers the tests
use to start servers of their own.

`SessionServers` gives the URL named by `SAAS_TEST_POSTGRES_URL` / `SAAS_TEST_REDIS_URL` when
set; otherwise it starts a private server from the installed binaries (in a temporary directory,
on a free loopback port) on first use, and `stop()` ends it. It never touches a server it did not
start."""

import atexit
import ctypes
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psycopg
import redis
import uvicorn
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

STARTUP_TIMEOUT = 60.0  # seconds; initdb + start take ~2 s here


class ServerUnavailable(RuntimeError):
    """A private server could not be started (missing binaries, failed start)."""


class PortTaken(ServerUnavailable):
    """The port was taken between being found free and being bound."""


PORT_ATTEMPTS = 5  # ports a server tries before giving up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too; Redis Cluster wants it
    at most 55535."""
    while True:
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def start_process(
    args: list[str], env: dict[str, str], stderr: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """A server in a process group of its own, so its workers and inference processes can be
    found and ended together. Its log lines (stderr) go to `stderr` if given."""
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr or subprocess.DEVNULL,
        start_new_session=True,
    )


def group_alive(process: subprocess.Popen[bytes]) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 30, sig: int = signal.SIGTERM
) -> None:
    """`sig` to the whole group (graceful), then SIGKILL whatever is left."""
    if group_alive(process):
        os.killpg(process.pid, sig)
        deadline = time.monotonic() + timeout
        while group_alive(process) and time.monotonic() < deadline:
            process.poll()  # reap the leader when it exits: a zombie still counts in the group
            time.sleep(0.1)
        if group_alive(process):
            os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(10)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec function asking Linux to send `sig` to the child when pytest dies (even by
    SIGKILL), so no private server outlives the run. Linux ties it to the thread that started
    the child: servers are started from pytest's main thread. It runs after Popen's uid change,
    which would otherwise clear it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    pr_set_pdeathsig = 1

    def _set() -> None:
        prctl(pr_set_pdeathsig, sig)

    return _set


WORKDIR_PREFIX = "saas-test-"
OWNER_FILE = "owner.pid"


def make_workdir(kind: str) -> Path:
    """A temporary directory for a private server, marked with the pid of this run."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{kind}-"))
    (workdir / OWNER_FILE).write_text(str(os.getpid()))
    return workdir


def remove_stale_workdirs() -> None:
    """Directories left by runs that were SIGKILLed (their servers died with them, the files
    stayed): removed when the run that made them is gone, never while it lives."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((workdir / OWNER_FILE).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(workdir, ignore_errors=True)
        except (OSError, ValueError):
            continue  # alive (PermissionError), being made, or not ours: leave it


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[int]:
    """`app` served by Uvicorn in a thread of this process on a free loopback port (yielded) once
    it has started (the model loads first), until the block ends. `config`: uvicorn.Config's."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


class RedisServer:
    """A Redis of the run's or a test's own on a free port, which a test may stop and start again
    (never the machine's shared one)."""

    def __init__(
        self,
        workdir: Path,
        extra_args: tuple[str, ...] = (),
        port: int = 0,
        pick_port: Callable[[], int] = free_port,
    ) -> None:
        # A port found free can be taken before redis-server binds it (by any socket the machine
        # opens meanwhile): until it has started once, another one is picked (`pick_port`).
        self.pick_port = None if port else pick_port
        self.port = port or pick_port()
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(PORT_ATTEMPTS - 1):
            if self.pick_port is None:
                break
            try:
                self._start()
            except PortTaken:
                self.port = self.pick_port()
                continue
            self.pick_port = None  # started: restarts keep this port
            return
        self._start()
        self.pick_port = None

    def _start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable(
                "redis-server not found on PATH: install the Debian package `redis-server`, "
                "or set SAAS_TEST_REDIS_URL to a running Redis"
            )
        log = self.workdir / f"redis-{self.port}.log"
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no", "--dir", str(self.workdir)]
                + self.extra_args,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        # Short timeouts, no retries: the port may belong to something else until it is ours.
        client = redis.Redis(
            port=self.port,
            socket_connect_timeout=0.2,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while True:
                if self.process.poll() is not None:
                    tail = _log_tail(log)
                    if "Address already in use" in tail:  # this port's own log: this start's
                        raise PortTaken(f"redis-server exited at start:\n{tail}")
                    raise ServerUnavailable(f"redis-server exited at start:\n{tail}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):  # not up, or not ours yet
                    pass
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"redis-server did not answer PING:\n{_log_tail(log)}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL (by its pid): a crash, nothing saved; `start` brings it back on the same
        port, empty."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


class RedisClusterServers:
    """A Redis Cluster of its own: `masters` masters with one replica each, on free loopback
    ports in `workdir`, a short node timeout so a replica takes over a failed master within
    seconds. `url` is the app's `redis+cluster://` notation."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [
            RedisServer(
                workdir,
                (
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{index}.conf",
                    "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
                ),
                pick_port=cluster_port,
            )
            for index in range(2 * masters)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            binary = shutil.which("redis-cli")
            if binary is None:
                raise ServerUnavailable("redis-cli not found on PATH (Debian: redis-tools)")
            create = subprocess.run(
                [binary, "--cluster", "create"]
                + [f"127.0.0.1:{node.port}" for node in self.nodes]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=STARTUP_TIMEOUT,
            )
            if create.returncode != 0:
                raise ServerUnavailable(f"redis-cli --cluster create failed:\n{create.stdout}")
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_until_ok(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Every live node reports cluster_state:ok and knows the same masters for all slots,
        and every replica is in sync with its master."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ok():
                return
            if time.monotonic() > deadline:
                raise ServerUnavailable("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _ok(self) -> bool:
        maps = set()
        for node in self.live_nodes():
            with redis.Redis(port=node.port, socket_timeout=1, decode_responses=True) as client:
                try:
                    state = client.execute_command("CLUSTER INFO")  # parsed into a dict
                    if state.get("cluster_state") != "ok":
                        return False
                    info = client.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
                    maps.add(tuple(sorted(self._slot_masters(client))))
                except redis.RedisError:
                    return False
        return len(maps) == 1

    @staticmethod
    def _slot_masters(client: "redis.Redis") -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) for each range, as this node sees it."""
        slots = client.execute_command("CLUSTER SLOTS")
        if isinstance(slots, dict):  # redis-py's cluster-aware parsing
            return [(start, end, int(v["primary"][1])) for (start, end), v in slots.items()]
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in slots]

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now (asked of a live node)."""
        slot = key_slot(key.encode())
        node = self.live_nodes()[0]
        with redis.Redis(port=node.port, socket_timeout=1) as client:
            for start, end, port in self._slot_masters(client):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master for slot {slot}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (by its pid): a crash, no goodbye to the cluster."""
        node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def postgres_bindir() -> Path:
    """The directory holding initdb and postgres: on PATH on most systems; on Debian in
    /usr/lib/postgresql/<version>/bin (not on PATH), found by pg_config or, without libpq-dev,
    by looking there (newest version first)."""
    candidates: list[Path] = []
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        debian,
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise ServerUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, via pg_config or in "
        "/usr/lib/postgresql/*/bin: install the Debian package `postgresql`, "
        "or set SAAS_TEST_POSTGRES_URL to a running server"
    )


def _unprivileged_user() -> dict[str, Any]:
    """Popen arguments that run PostgreSQL as the `postgres` system user when we are root:
    initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            "running as root, and PostgreSQL refuses to: the `postgres` system user (made by "
            "the Debian package `postgresql`) is needed to run the private test cluster"
        ) from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PostgresServer:
    """A throwaway PostgreSQL cluster: trust auth, 127.0.0.1 only on a free port, socket in its
    temporary directory, fsync off; database `test`."""

    def __init__(self) -> None:
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        bindir = postgres_bindir()
        as_user = _unprivileged_user()
        self.workdir = make_workdir("postgres")
        try:
            if as_user:
                os.chown(self.workdir, as_user["user"], as_user["group"])
            initdb = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.workdir / "data"), "-U", "postgres"]
                + ["--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                cwd=self.workdir,
                capture_output=True,
                text=True,
                **as_user,
            )
            if initdb.returncode != 0:
                raise ServerUnavailable(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
            self.port = free_port()
            self.launch()
            with self._connect() as connection:
                connection.execute("CREATE DATABASE test")
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start the server on the cluster made by `start`, on the same port (also after
        `halt`), and return once it accepts connections."""
        assert self.workdir is not None
        with (self.workdir / "postgres.log").open("ab") as output:
            self.process = subprocess.Popen(
                [str(postgres_bindir() / "postgres"), "-D", str(self.workdir / "data")]
                + ["-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}"]
                + ["-c", f"unix_socket_directories={self.workdir}", "-c", "fsync=off"],
                cwd=self.workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients.
                preexec_fn=_die_with_parent(signal.SIGINT),
                **_unprivileged_user(),
            )
        self._connect().close()

    def halt(self, sig: int = signal.SIGQUIT) -> None:
        """Stop the server and keep its cluster, for `launch` to start it again: SIGQUIT is
        `pg_ctl stop -m immediate` (no checkpoint; crash recovery at the next start), SIGINT
        `-m fast`. Sent to the postmaster, which we started: pg_ctl refuses to run as root."""
        assert self.process is not None
        stop_process(self.process, sig=sig)
        self.process = None

    def _connect(self) -> psycopg.Connection[Any]:
        """A connection to the `postgres` database, once the server accepts one."""
        assert self.process is not None and self.workdir is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                log = _log_tail(self.workdir / "postgres.log")
                raise ServerUnavailable(f"postgres exited at start:\n{log}")
            try:
                return psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    dbname="postgres",
                    connect_timeout=2,
                    autocommit=True,
                )
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    log = _log_tail(self.workdir / "postgres.log")
                    raise ServerUnavailable(
                        f"postgres did not accept connections:\n{log}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGINT)
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class SessionServers:
    """The run's PostgreSQL and Redis: each one named by its environment variable, else a private
    one started on first use (once per run). `stop()` ends only the private ones."""

    def __init__(self) -> None:
        self._postgres: PostgresServer | None = None
        self._redis: RedisServer | None = None
        self._redis_dir: Path | None = None
        self._failed: dict[str, str] = {}  # a failed start is not tried again for every test
        self._sigterm_installed = False
        self._previous_sigterm: Any = None
        self._cleaned = False
        atexit.register(self.stop)  # a second line of defence behind pytest_unconfigure

    def postgres_url(self) -> str:
        if url := os.environ.get("SAAS_TEST_POSTGRES_URL"):
            return url
        if self._postgres is None:
            self._before_start("postgres")
            server = PostgresServer()
            self._start("postgres", server.start)
            self._postgres = server
        return self._postgres.url

    def redis_url(self) -> str:
        if url := os.environ.get("SAAS_TEST_REDIS_URL"):
            return url
        if self._redis is None:
            self._before_start("redis")
            self._redis_dir = make_workdir("redis")
            server = RedisServer(self._redis_dir)
            self._start("redis", server.start)
            self._redis = server
        return self._redis.url

    def _before_start(self, name: str) -> None:
        if name in self._failed:
            raise ServerUnavailable(self._failed[name])
        if not self._cleaned:
            remove_stale_workdirs()
            self._cleaned = True
        self._interrupt_on_sigterm()

    def _start(self, name: str, start: Callable[[], None]) -> None:
        try:
            start()
        except ServerUnavailable as error:
            self._failed[name] = str(error)
            raise

    def _interrupt_on_sigterm(self) -> None:
        """SIGTERM (a CI timeout, say) kills Python without cleanup; as KeyboardInterrupt it
        lets pytest tear down and stop the servers, as Ctrl-C does. Only Python's default
        handler is replaced, and only from the main thread (the only one that may)."""
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous != signal.SIG_DFL:
            return

        def _interrupt(_signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, _interrupt)
        self._previous_sigterm = previous
        self._sigterm_installed = True

    def stop(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._redis_dir is not None:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
            self._redis_dir = None
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._sigterm_installed = False
