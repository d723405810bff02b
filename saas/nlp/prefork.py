"""Model memory that does not multiply with workers (Gunicorn, ops/gunicorn.conf.py).

The master loads every model once, before it forks any worker, and freezes the garbage
collector's view of them. Each worker, right after it is forked and while it still has a single
thread (Gunicorn's post_fork hook), forks its inference process from itself. Master, workers and
inference processes then share the model pages copy-on-write: a page is copied only when a
process writes to it, and the weights (NumPy buffers) are only read. gc.freeze() keeps the
collector from writing to every object it would otherwise traverse; reference counts still
touch the objects in use, which is what the measured per-process cost is made of.

With a long-text lane (saas/nlp/pool.py) the worker forks one inference process per lane, the
same way, so the second lane shares the same pages. The lanes (saas/nlp/lane.py) adopt them
(`take()`) instead of spawning their own. Forking later, from a worker whose event loop and
thread pool run, would be unsafe; so when an adopted process dies, the worker stops gracefully
and Gunicorn forks a fresh one, which gets its own inference processes in milliseconds (the
models are already in memory).
"""

import gc
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import structlog
from spacy.language import Language

from saas.nlp import inference_process

log = structlog.get_logger(__name__)

_models: dict[str, Language] | None = None
_forked: "dict[str, Forked]" = {}  # by lane name


def preload(models: dict[str, str]) -> None:
    """In the master, before any worker is forked."""
    global _models
    _models = inference_process.load_models(models)
    gc.collect()
    gc.freeze()  # the loaded objects move to a generation the collector never walks
    log.info("models_preloaded", models=sorted(_models))


def preloaded() -> bool:
    return _models is not None


class ForkedProcess:
    """A forked child's handle, shaped like multiprocessing.Process where its lane uses it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def _reap(self, block: bool) -> None:
        if self.exitcode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere
            self.exitcode = -1
            return
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)

    def is_alive(self) -> bool:
        self._reap(block=False)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Blocking: call it from a thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def kill(self) -> None:
        if self.is_alive():
            os.kill(self.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Forked:
    """An inference process forked from this worker, waiting for its lane to adopt it."""

    sock: socket.socket
    process: ForkedProcess
    models: frozenset[str]


def fork_inference(
    max_batch: int, max_wait: float, wait_fraction: float, lanes: tuple[str, ...] = ("short",)
) -> None:
    """In a worker, right after Gunicorn forked it (one thread): fork its inference processes,
    one per lane."""
    if _models is None:
        return
    for lane in lanes:
        _forked[lane] = _fork_one(lane, _models, max_batch, max_wait, wait_fraction)


def _fork_one(
    lane: str, models: dict[str, Language], max_batch: int, max_wait: float, wait_fraction: float
) -> Forked:
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the inference process
        parent_sock.close()
        # Nothing the worker opened (its listening socket, the master's pipes, another lane's
        # pipe) stays open here.
        keep = child_sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, _max_fd())
        inference_process.ignore_stop_signals()
        try:
            conn = Connection(child_sock.detach())
            inference_process.serve_loaded(conn, models, max_batch, max_wait, wait_fraction, lane)
        finally:
            os._exit(0)  # never run the worker's code or atexit handlers in this process
    child_sock.close()
    return Forked(parent_sock, ForkedProcess(pid), frozenset(models))


def take(models: dict[str, str], lane: str = "short") -> Forked | None:
    """The inference process forked for this worker's `lane`, once, if it serves exactly
    `models`."""
    forked = _forked.pop(lane, None)
    if forked is None:
        return None
    if forked.models != frozenset(models):
        forked.sock.close()  # a different configuration: let it exit, spawn instead
        return None
    return forked


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
