"""One lane: a queue of texts and the inference process that answers it (inference_process.py).

`Lane.run_many()` queues texts and awaits their JSON answers. The pipe to the child is a socket
pair driven by the event loop itself (an asyncio transport), so no thread sits between the two:
- texts queued during one turn of the loop leave together, in one message;
- the child's answers arrive through `data_received`, split into messages by wire.py, which
  describes what goes through the pipe.
No thread has to win the GIL from a busy event loop to move a message. (Measured at one client,
against nlp() called in the same process: ~1 ms a request, as with the reader and writer threads
this replaced, under uvloop and asyncio alike.)
The child batches whatever has arrived, so batches grow with load and shrink to one for a lone
client. If the child dies, the lane's waiting requests get 503 and a new child is started; under
Gunicorn, where the children were forked with the models shared (prefork.py), the worker stops
gracefully instead (the other lane finishes its requests) and Gunicorn forks a fresh one.
"""

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

import structlog

from saas import problems
from saas.kit import metrics
from saas.nlp import inference_process, prefork, wire
from saas.problems.errors import AppError, Overloaded

log = structlog.get_logger(__name__)

TEXT_FAILED = "The text could not be processed."


class InferenceFailed(AppError):
    """A text that failed inside spaCy (the inference process isolated it from its batch).
    `error` is spaCy's message: for the log, never for the client."""

    def __init__(self, error: str) -> None:
        super().__init__(TEXT_FAILED, problems.INFERENCE_FAILED)
        self.error = error


_SPAWN = multiprocessing.get_context("spawn")  # forking a threaded server process is unsafe


class ProcessHandle(Protocol):
    """What a lane needs of its inference process: a spawned multiprocessing.Process, or a
    process forked with the models shared (prefork.ForkedProcess)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


class _Child:
    """One inference process and the transport that talks to it. It knows nothing of its lane:
    the answers it reads go to `on_results`, its death (a hang-up that was not ours) to
    `on_exit`."""

    def __init__(
        self,
        sock: socket.socket,
        process: ProcessHandle,
        *,
        on_results: Callable[[wire.Results], None],
        on_exit: Callable[["_Child"], None],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.process = process
        self.on_results = on_results
        self.on_exit = on_exit
        self.transport: asyncio.Transport | None = None
        self.outbox: list[wire.TextRequest] = []
        self.ready: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.alive = True

    async def connect(self) -> None:
        self.transport, _ = await self.loop.create_unix_connection(
            lambda: wire.FrameProtocol(self._received, self._lost), sock=self.sock
        )

    def _received(self, data: bytes) -> None:
        message = wire.decode_child_message(data)
        if isinstance(message, wire.Ready):
            _set_result(self.ready, message.models_meta)
        else:
            self.on_results(message)

    def _lost(self) -> None:
        if self.alive:  # not hung up by us: the child died
            self.alive = False
            self.on_exit(self)

    def send(self, items: list[wire.TextRequest]) -> None:
        # Everything queued during this turn of the event loop leaves in one message.
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.extend(items)

    def _flush(self) -> None:
        items, self.outbox = self.outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.frame(wire.encode(wire.Requests(items))))

    def close(self, timeout: float = 5.0) -> None:
        """Blocking (joins the process): call it in a thread once the transport is closed."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)

    def hang_up(self) -> None:
        """Closing the pipe tells the child to exit."""
        self.alive = False
        if self.transport is not None:
            self.transport.close()
        else:
            with contextlib.suppress(OSError):
                self.sock.close()


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Lane:
    """One queue and the inference process that answers it."""

    def __init__(
        self,
        models: dict[str, str],
        *,
        name: str = "short",
        max_batch: int = 64,
        max_wait: float = 0.02,
        wait_fraction: float = 0.0,
        max_queue: int = 2048,
        max_queued_chars: int | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.models = dict(models)
        self.name = name
        # Characters waiting or in inference, bounded for the long lane: 2,048 texts of 100,000
        # characters would be hours of work behind a "retry in 1 s".
        self.max_queued_chars = max_queued_chars
        self.queued_chars = 0
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.wait_fraction = wait_fraction
        self.max_queue = max_queue
        self.start_timeout = start_timeout
        self.meta: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count()
        self._futures: dict[int, asyncio.Future[wire.TextResult]] = {}
        self._child: _Child | None = None
        self._closing = False
        self._restart_task: asyncio.Task[None] | None = None
        # The inference process was forked for this worker with the models shared (prefork.py).
        self.shares_models = False
        self.queue_gauge = metrics.INFERENCE_QUEUE.labels(name)
        self.loop: asyncio.AbstractEventLoop

    @property
    def ready(self) -> bool:
        return self._child is not None and self._child.ready.done() and not self._closing

    @property
    def pid(self) -> int | None:
        """The inference process's, None while the lane has none."""
        return None if self._child is None else self._child.process.pid

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        forked = prefork.take(self.models, self.name)
        if forked is not None:
            self.shares_models = True
            await self._start_child(self._adopt(forked.sock, forked.process))
        else:
            await self._start_child()

    def _adopt(self, sock: socket.socket, process: ProcessHandle) -> _Child:
        return _Child(sock, process, on_results=self._deliver, on_exit=self._child_exited)

    def _spawn(self) -> _Child:
        """A new interpreter that loads its own copy of the models."""
        parent_sock, child_sock = socket.socketpair()
        child_conn = Connection(child_sock.detach())
        process = _SPAWN.Process(
            target=inference_process.serve,
            args=(
                child_conn,
                self.models,
                self.max_batch,
                self.max_wait,
                self.wait_fraction,
                self.name,
            ),
            name=f"saas-inference-{self.name}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child_conn.close()
        return self._adopt(parent_sock, process)

    async def _start_child(self, child: _Child | None = None) -> None:
        child = child or self._spawn()
        self._child = child
        try:
            await child.connect()
            self.meta = await asyncio.wait_for(asyncio.shield(child.ready), self.start_timeout)
        except BaseException:
            self._child = None
            child.hang_up()
            await asyncio.to_thread(child.close, 1.0)
            raise
        log.info("inference_ready", lane=self.name, pid=child.process.pid, models=sorted(self.meta))

    async def _restart(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self._start_child()
                return
            except Exception:
                log.exception("inference_restart_failed", lane=self.name, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._closing = True
        restart, self._restart_task = self._restart_task, None
        if restart is not None:
            # A replacement still loading its models: _start_child's cleanup ends its process.
            restart.cancel()
            await asyncio.wait([restart])  # not `await restart`: that would re-raise the cancel
        child, self._child = self._child, None
        if child is not None:
            child.hang_up()
            await asyncio.to_thread(child.close)
        self._fail_all("The service is shutting down; retry shortly.")

    def check_room(self, texts: list[str]) -> None:
        """Raise Overloaded (503) unless the lane is ready and has room for `texts`. An idle lane
        takes any batch, so a plan's batch limit above the bounds still works."""
        if self._child is None or not self.ready:
            raise Overloaded("The NLP engine is starting; retry shortly.")
        if not self._futures:
            return
        if len(self._futures) + len(texts) > self.max_queue:
            raise Overloaded()
        limit = self.max_queued_chars
        if limit is not None and self.queued_chars + sum(map(len, texts)) > limit:
            raise Overloaded()

    async def run_many(
        self, model: str, task: str, texts: list[str], options: dict[str, Any] | None = None
    ) -> list[bytes | InferenceFailed]:
        """The JSON answer for each text, in order, or InferenceFailed (returned, not raised) for
        a text that failed inside spaCy. The texts join the queue together, so they share
        micro-batches with every other request's."""
        child = self._child
        self.check_room(texts)
        assert child is not None
        chars = sum(map(len, texts))
        self.queued_chars += chars
        request_ids = [next(self._ids) for _ in texts]
        futures = [self.loop.create_future() for _ in texts]
        self._futures.update(zip(request_ids, futures, strict=True))
        self.queue_gauge.set(len(self._futures))
        items = zip(request_ids, texts, strict=True)
        child.send([wire.TextRequest(rid, model, task, text, options) for rid, text in items])
        try:
            # return_exceptions: when the child dies every future fails, and all must be read.
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for request_id in request_ids:
                self._futures.pop(request_id, None)
            self.queued_chars -= chars
            self.queue_gauge.set(len(self._futures))
        payloads: list[bytes | InferenceFailed] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            if result.ok:
                assert isinstance(result.payload, bytes)
                payloads.append(result.payload)
            else:
                payloads.append(InferenceFailed(str(result.payload)))
        return payloads

    def _deliver(self, batch: wire.Results) -> None:
        metrics.observe_inference_batch(self.name, len(batch.items), batch.seconds)
        for result in batch.items:
            future = self._futures.get(result.request_id)
            if future is not None and not future.done():
                future.set_result(result)

    def _fail_all(self, detail: str) -> None:
        for future in self._futures.values():
            if not future.done():
                future.set_exception(Overloaded(detail))

    def _child_exited(self, child: _Child) -> None:
        if not child.ready.done():  # died while loading models: _start_child raises this
            code = child.process.exitcode
            child.ready.set_exception(
                RuntimeError(f"inference process exited (code {code}) while loading models")
            )
            return
        if child is not self._child or self._closing:
            return
        log.error(
            "inference_process_died",
            lane=self.name,
            pid=child.process.pid,
            code=child.process.exitcode,
        )
        self._child = None
        self._fail_all("The NLP engine restarted; retry shortly.")
        child.hang_up()
        threading.Thread(target=child.close, daemon=True).start()
        if self.shares_models:
            # Forking a new one from this threaded worker is unsafe: stop gracefully instead,
            # and Gunicorn forks a fresh worker, whose inference process is ready at once.
            log.error("worker_stopping_for_a_fresh_inference_process", pid=os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._restart_task = self.loop.create_task(self._restart())
