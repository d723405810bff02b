"""The asyncio-facing side of the inference processes (see worker.py).

`Engine.run()` queues a text and awaits its JSON answer. The engine has one `Lane` (a queue and
its inference process) for short texts and, with `long_text_chars`, a second one for texts at
least that long: inference runs one batch at a time, so a 100,000-character text (~7 s) in the
only lane would hold up every short text behind it. The long lane gives the OS two processes to
share the CPU between, and short texts keep their latency. Each text is whole in its lane, so
answers stay exactly nlp(text)'s (cutting a text into sentences would change the parser's and
tok2vec's context).

In a lane, the pipe to the child is a socket pair driven by the event loop itself (an asyncio
transport), so no thread sits between the two:
- texts queued during one turn of the loop leave together, in one message;
- the child's answers arrive through `data_received`, split into messages by wire.py, which
  describes what goes through the pipe.
No thread has to win the GIL from a busy event loop to move a message. (Measured at one client,
against nlp() called in the same process: ~1 ms a request, as with the reader and writer threads
this replaced, under uvloop and asyncio alike.)
The child batches whatever has arrived, so batches grow with load and shrink to one for a lone
client. If a lane's child dies, that lane's waiting requests get 503 and a new child is started;
under Gunicorn, where the children were forked with the models shared (prefork.py), the worker
stops gracefully instead (the other lane finishes its requests) and Gunicorn forks a fresh one.
"""

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any, Protocol

import structlog

from saas import problems
from saas.kit import metrics
from saas.nlp import prefork, wire, worker
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
    """What the engine needs of its inference process: a spawned multiprocessing.Process, or a
    process forked with the models shared (prefork.ForkedProcess)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


class _Child:
    """One inference process and the transport that talks to it."""

    def __init__(self, engine: "Lane", sock: socket.socket, process: ProcessHandle) -> None:
        self.engine = engine
        self.sock = sock
        self.process = process
        self.transport: asyncio.Transport | None = None
        self.outbox: list[wire.TextRequest] = []
        self.ready: asyncio.Future[dict[str, Any]] = engine.loop.create_future()
        self.alive = True

    @classmethod
    def spawn(cls, engine: "Lane") -> "_Child":
        """A new interpreter that loads its own copy of the models."""
        parent_sock, child_sock = socket.socketpair()
        child_conn = Connection(child_sock.detach())
        process = _SPAWN.Process(
            target=worker.serve,
            args=(
                child_conn,
                engine.models,
                engine.max_batch,
                engine.max_wait,
                engine.wait_fraction,
                engine.name,
            ),
            name=f"saas-inference-{engine.name}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child_conn.close()
        return cls(engine, parent_sock, process)

    async def connect(self) -> None:
        self.transport, _ = await self.engine.loop.create_unix_connection(
            lambda: wire.FrameProtocol(self._received, self._lost), sock=self.sock
        )

    def _received(self, data: bytes) -> None:
        message = wire.decode_child_message(data)
        if isinstance(message, wire.Ready):
            _set_result(self.ready, message.models_meta)
        else:
            self.engine._deliver(message.items, message.seconds)

    def _lost(self) -> None:
        if self.alive:  # not hung up by us: the child died
            self.alive = False
            self.engine._child_exited(self)

    def send(self, items: list[wire.TextRequest]) -> None:
        # Everything queued during this turn of the event loop leaves in one message.
        if not self.outbox:
            self.engine.loop.call_soon(self._flush)
        self.outbox.extend(items)

    def _flush(self) -> None:
        items, self.outbox = self.outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.frame(wire.encode(wire.Requests(items))))
            self.engine.texts_sent += len(items)

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
        # Texts written to the inference process, batches answered and the texts in them (the
        # last two's ratio is the mean micro-batch size).
        self.texts_sent = 0
        self.batches_done = 0
        self.texts_done = 0
        self.queue_gauge = metrics.INFERENCE_QUEUE.labels(name)
        self.loop: asyncio.AbstractEventLoop

    @property
    def ready(self) -> bool:
        return self._child is not None and self._child.ready.done() and not self._closing

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        forked = prefork.take(self.models, self.name)
        if forked is not None:
            self.shares_models = True
            await self._start_child(_Child(self, forked.sock, forked.process))
        else:
            await self._start_child()

    async def _start_child(self, child: _Child | None = None) -> None:
        child = child or _Child.spawn(self)
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

    def _deliver(self, results: list[wire.TextResult], seconds: float | None = None) -> None:
        self.batches_done += 1
        self.texts_done += len(results)
        metrics.observe_inference_batch(self.name, len(results), seconds)
        for result in results:
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


class Engine:
    """The lanes, and which one a text goes to."""

    def __init__(
        self,
        models: dict[str, str],
        *,
        long_text_chars: int | None = None,
        long_max_queued_chars: int | None = None,
        max_batch: int = 64,
        max_wait: float = 0.02,
        wait_fraction: float = 0.0,
        max_queue: int = 2048,
        start_timeout: float = 180.0,
    ) -> None:
        self.models = dict(models)
        self.long_text_chars = long_text_chars or 0  # 0 or None: one lane for every text

        def lane(name: str, max_queued_chars: int | None = None) -> Lane:
            return Lane(
                models,
                name=name,
                max_batch=max_batch,
                max_wait=max_wait,
                wait_fraction=wait_fraction,
                max_queue=max_queue,
                max_queued_chars=max_queued_chars,
                start_timeout=start_timeout,
            )

        self.short = lane("short")
        self.long = lane("long", long_max_queued_chars) if self.long_text_chars else None
        self.lanes = [self.short] if self.long is None else [self.short, self.long]

    @property
    def meta(self) -> dict[str, dict[str, Any]]:
        return self.short.meta

    @property
    def ready(self) -> bool:
        return all(lane.ready for lane in self.lanes)

    @property
    def shares_models(self) -> bool:
        return self.short.shares_models

    def lane_of(self, text: str) -> Lane:
        if self.long is not None and len(text) >= self.long_text_chars:
            return self.long
        return self.short

    async def start(self) -> None:
        # Side by side: a spawned lane spends seconds loading its models.
        outcomes = await asyncio.gather(
            *(lane.start() for lane in self.lanes), return_exceptions=True
        )
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]

    async def stop(self) -> None:
        for lane in self.lanes:
            await lane.stop()

    async def run(
        self, model: str, task: str, text: str, options: dict[str, Any] | None = None
    ) -> bytes:
        """The JSON answer for one text, as bytes ready to send; raises InferenceFailed (500) if
        it fails inside spaCy."""
        (payload,) = await self.lane_of(text).run_many(model, task, [text], options)
        if isinstance(payload, InferenceFailed):
            raise payload
        return payload

    async def run_many(
        self, model: str, task: str, texts: list[str], options: dict[str, Any] | None = None
    ) -> list[bytes | InferenceFailed]:
        """The JSON answer for each text, in the texts' order, or InferenceFailed for a text that
        failed inside spaCy. Each text goes to its lane; a lane that is full or restarting fails the
        whole call with 503."""
        positions: dict[Lane, list[int]] = {}
        for index, text in enumerate(texts):
            positions.setdefault(self.lane_of(text), []).append(index)
        if len(positions) == 1:  # the usual case: no regrouping
            (lane,) = positions
            return await lane.run_many(model, task, texts, options)
        # Both lanes must have room before either starts: a 503 after the long lane has worked
        # through its share would waste that work and hold up everyone's long texts.
        for lane, indexes in positions.items():
            lane.check_room([texts[i] for i in indexes])
        runs = [
            lane.run_many(model, task, [texts[i] for i in indexes], options)
            for lane, indexes in positions.items()
        ]
        # return_exceptions: the other lane's answers must be awaited before raising.
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        payloads: list[bytes | InferenceFailed] = [b""] * len(texts)
        for indexes, outcome in zip(positions.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            for index, payload in zip(indexes, outcome, strict=True):
                payloads[index] = payload
        return payloads
