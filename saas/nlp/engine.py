"""The asyncio-facing side of the inference process (see worker.py).

`Engine.run()` queues a text and awaits its JSON answer. Two small threads move pickled batches
over the pipe, so the event loop never blocks on spaCy or on a full pipe:
- the writer drains everything queued since its last send into one message;
- the reader hands each batch of results back to the loop.
The child batches whatever has arrived, so batches grow with load and shrink to one for a lone
client. If the child dies, waiting requests get 503 and a new child is started.
"""

import asyncio
import contextlib
import itertools
import multiprocessing
import pickle
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

import structlog

from saas.errors import AppError, Overloaded
from saas.nlp import worker

log = structlog.get_logger(__name__)

_SPAWN = multiprocessing.get_context("spawn")  # forking a threaded server process is unsafe


class _Child:
    """One inference process and the two threads that talk to it."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        parent_conn, child_conn = _SPAWN.Pipe(duplex=True)
        self.conn: Connection = parent_conn
        self.process = _SPAWN.Process(
            target=worker.serve,
            args=(
                child_conn,
                engine.models,
                engine.max_batch,
                engine.max_wait,
                engine.wait_fraction,
            ),
            name="saas-inference",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.outbox: queue.SimpleQueue[list[worker.Request] | None] = queue.SimpleQueue()
        self.ready: asyncio.Future[dict[str, Any]] = engine.loop.create_future()
        self.alive = True
        threading.Thread(target=self._read, name="saas-inference-reader", daemon=True).start()
        threading.Thread(target=self._write, name="saas-inference-writer", daemon=True).start()

    def _write(self) -> None:
        while (batch := self.outbox.get()) is not None:
            stopping = False
            while True:  # gather everything queued meanwhile into the same message
                try:
                    more = self.outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            try:
                self.conn.send_bytes(pickle.dumps(batch))
            except (OSError, ValueError):
                return  # the reader notices the dead child
            if stopping:
                return

    def _read(self) -> None:
        loop = self.engine.loop
        try:
            while True:
                try:
                    kind, body = pickle.loads(self.conn.recv_bytes())
                except (EOFError, OSError, ValueError):
                    loop.call_soon_threadsafe(self.engine._child_exited, self)
                    return
                if kind == "ready":
                    loop.call_soon_threadsafe(_set_result, self.ready, body)
                else:
                    loop.call_soon_threadsafe(self.engine._deliver, body)
        except RuntimeError:  # the event loop closed first (the server is gone): nothing to tell
            return

    def send(self, items: list[worker.Request]) -> None:
        self.outbox.put(items)

    def close(self, timeout: float = 5.0) -> None:
        self.alive = False
        self.outbox.put(None)
        with contextlib.suppress(OSError):
            self.conn.close()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Engine:
    def __init__(
        self,
        models: dict[str, str],
        *,
        max_batch: int = 64,
        max_wait: float = 0.02,
        wait_fraction: float = 0.1,
        max_queue: int = 2048,
        start_timeout: float = 180.0,
    ) -> None:
        self.models = dict(models)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.wait_fraction = wait_fraction
        self.max_queue = max_queue
        self.start_timeout = start_timeout
        self.meta: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count()
        self._futures: dict[int, asyncio.Future[tuple[bool, bytes | str]]] = {}
        self._child: _Child | None = None
        self._closing = False
        # Batches answered and texts in them: their ratio is the mean micro-batch size.
        self.batches_done = 0
        self.texts_done = 0
        self.loop: asyncio.AbstractEventLoop

    @property
    def ready(self) -> bool:
        return self._child is not None and self._child.ready.done() and not self._closing

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._start_child()

    async def _start_child(self) -> None:
        child = _Child(self)
        self._child = child
        try:
            self.meta = await asyncio.wait_for(asyncio.shield(child.ready), self.start_timeout)
        except BaseException:
            self._child = None
            await asyncio.to_thread(child.close, 1.0)
            raise
        log.info("inference_ready", pid=child.process.pid, models=sorted(self.meta))

    async def _restart(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self._start_child()
                return
            except Exception:
                log.exception("inference_restart_failed", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._closing = True
        child, self._child = self._child, None
        if child is not None:
            await asyncio.to_thread(child.close)
        self._fail_all("The service is shutting down; retry shortly.")

    async def run(
        self, model: str, task: str, text: str, options: dict[str, Any] | None = None
    ) -> bytes:
        """The JSON answer for one text, as bytes ready to send."""
        return (await self.run_many(model, task, [text], options))[0]

    async def run_many(
        self, model: str, task: str, texts: list[str], options: dict[str, Any] | None = None
    ) -> list[bytes]:
        """The JSON answer for each text, in order. The texts join the queue together, so they
        share micro-batches with every other request's."""
        child = self._child
        if child is None or not self.ready:
            raise Overloaded("The NLP engine is starting; retry shortly.")
        if len(self._futures) + len(texts) > self.max_queue:
            raise Overloaded()
        request_ids = [next(self._ids) for _ in texts]
        futures = [self.loop.create_future() for _ in texts]
        self._futures.update(zip(request_ids, futures, strict=True))
        items = zip(request_ids, texts, strict=True)
        child.send([(request_id, model, task, text, options) for request_id, text in items])
        try:
            results: list[tuple[bool, bytes | str]] = await asyncio.gather(*futures)
        finally:
            for request_id in request_ids:
                self._futures.pop(request_id, None)
        payloads: list[bytes] = []
        for ok, payload in results:
            if not ok:
                log.error("inference_failed", model=model, task=task, error=payload)
                raise AppError("The text could not be processed.", status_code=500)
            assert isinstance(payload, bytes)
            payloads.append(payload)
        return payloads

    def _deliver(self, results: list[worker.Result]) -> None:
        self.batches_done += 1
        self.texts_done += len(results)
        for request_id, ok, payload in results:
            future = self._futures.get(request_id)
            if future is not None and not future.done():
                future.set_result((ok, payload))

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
        log.error("inference_process_died", pid=child.process.pid, code=child.process.exitcode)
        self._child = None
        self._fail_all("The NLP engine restarted; retry shortly.")
        threading.Thread(target=child.close, daemon=True).start()
        self._restart_task = asyncio.ensure_future(self._restart())
