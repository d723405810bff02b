"""What runs inside the inference process: it loads each model once, then answers micro-batches
from its pipe.

It runs apart from the server process so that spaCy and the event loop do not fight for one GIL
(measured: a thread reached 0.82x offline nlp.pipe throughput, a child process 0.97x).
Its lane (lane.py) starts it and writes to its pipe; what goes through the pipe, and how, is
wire.py.
"""

import gc
import os
import signal
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import orjson
import spacy
from spacy.language import Language
from spacy.tokens import Doc

from saas.nlp import wire
from saas.nlp.tasks import TASKS, serialize, skipped_components

# How much lower each lane's process runs (os.nice): the long lane yields the CPU to the short
# lane and to the server's event loop when they compete for it, so a long text takes longer and
# short texts keep their latency (bench/fairness.py measures both).
NICENESS = {"short": 0, "long": 10}


def lower_priority(lane: str) -> None:
    if NICENESS.get(lane, 0):
        os.nice(NICENESS[lane])


def load_models(models: dict[str, str]) -> dict[str, Language]:
    return {public: spacy.load(package) for public, package in models.items()}


def model_meta(public_name: str, nlp: Language) -> dict[str, Any]:
    return {
        "name": public_name,
        "lang": nlp.lang,
        "version": nlp.meta.get("version", ""),
        "spacy_version": spacy.about.__version__,
        "pipeline": list(nlp.pipe_names),
    }


@contextmanager
def pipeline_docs(nlp: Language, disable: list[str], texts: list[str]) -> Iterator[Iterable[Doc]]:
    """The docs of one batch without the `disable`d components, valid inside the block only:
    memory_zone frees the strings each batch adds to the vocabulary, so a long-running inference
    process's memory does not grow with the variety of its input."""
    with nlp.memory_zone():
        if len(texts) == 1:  # a lone client: nlp() skips pipe()'s batching, ~1 ms a text
            yield [nlp(texts[0], disable=disable)]
        else:
            yield nlp.pipe(texts, disable=disable, batch_size=len(texts))


def annotate(nlp: Language, task: str, texts: list[str], options: list[Any]) -> list[bytes]:
    """One task's JSON answers for a batch, computed with only the components it needs."""
    with pipeline_docs(nlp, skipped_components(task, nlp.pipe_names), texts) as docs:
        return [
            orjson.dumps(serialize(task, doc, opt)) for doc, opt in zip(docs, options, strict=True)
        ]


def run_batch(nlps: dict[str, Language], batch: list[wire.TextRequest]) -> list[wire.TextResult]:
    groups: dict[tuple[str, str], list[wire.TextRequest]] = defaultdict(list)
    for request in batch:
        groups[(request.model, request.task)].append(request)
    results: list[wire.TextResult] = []
    for (model, task), requests in groups.items():
        nlp = nlps.get(model)
        if nlp is None or task not in TASKS:
            error = f"unknown model or task {model}/{task}"
            results.extend(wire.TextResult(r.request_id, False, error) for r in requests)
            continue
        texts = [r.text for r in requests]
        options = [r.options for r in requests]
        try:
            payloads = annotate(nlp, task, texts, options)
            results.extend(
                wire.TextResult(r.request_id, True, p)
                for r, p in zip(requests, payloads, strict=True)
            )
        except Exception:
            # Isolate the text that broke the batch so the others still get their answers.
            for r in requests:
                try:
                    (payload,) = annotate(nlp, task, [r.text], [r.options])
                    results.append(wire.TextResult(r.request_id, True, payload))
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
                    error = f"{type(exc).__name__}: {exc}"
                    results.append(wire.TextResult(r.request_id, False, error))
    return results


class Batcher:
    """Forms micro-batches from the pipe.

    It takes whatever has queued, up to max_batch: a lone request is answered at once, a crowd in
    one nlp.pipe call. Under load the clients answered by one batch send their next texts while
    the next batch runs, so batches alternate large and small (27 and 5 texts at 32
    connections). With `wait_fraction` above 0, when fewer texts are waiting than the last batch
    held, it waits for them, at most that fraction of the last batch's inference time (and never
    more than max_wait). Off by default: measured at 32 connections (three interleaved runs of
    10 s, 1 worker), waiting up to 0.1 of the last batch's time made the inference process idle
    14% of the time for 10 % fewer requests/s (0.69 against 0.77 x offline nlp.pipe); at 128
    connections both gave the same requests/s.
    """

    def __init__(
        self, conn: Connection, max_batch: int, max_wait: float, wait_fraction: float
    ) -> None:
        self.conn = conn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.wait_fraction = wait_fraction
        self.waiting: deque[wire.TextRequest] = deque()
        self.last_size = 0
        self.last_seconds = 0.0

    def _receive(self) -> None:
        self.waiting.extend(wire.decode_requests(self.conn.recv_bytes()).items)

    def next_batch(self) -> list[wire.TextRequest]:
        """Blocks until there is work; raises EOFError or OSError when the parent is gone."""
        if not self.waiting:
            self._receive()
        while len(self.waiting) < self.max_batch and self.conn.poll():
            self._receive()
        expected = min(self.last_size, self.max_batch)
        if len(self.waiting) < expected:
            wait = min(self.max_wait, self.last_seconds * self.wait_fraction)
            deadline = time.perf_counter() + wait
            while len(self.waiting) < expected:
                left = deadline - time.perf_counter()
                if left <= 0 or not self.conn.poll(left):
                    break
                self._receive()
        count = min(self.max_batch, len(self.waiting))
        return [self.waiting.popleft() for _ in range(count)]

    def done(self, size: int, seconds: float) -> None:
        self.last_size, self.last_seconds = size, seconds


def serve(
    conn: Connection,
    models: dict[str, str],
    max_batch: int,
    max_wait: float = 0.02,
    wait_fraction: float = 0.0,
    lane: str = "short",
) -> None:
    """A spawned inference process: load the models, then answer."""
    ignore_stop_signals()
    serve_loaded(conn, load_models(models), max_batch, max_wait, wait_fraction, lane)


def ignore_stop_signals() -> None:
    """Ctrl+C and SIGTERM reach the whole process group, but the server may still be finishing
    requests that wait on us: the parent shuts us down by closing the pipe, once it is done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve_loaded(
    conn: Connection,
    nlps: dict[str, Language],
    max_batch: int,
    max_wait: float = 0.02,
    wait_fraction: float = 0.0,
    lane: str = "short",
) -> None:
    """Answer micro-batches with models already loaded, until the parent hangs up."""
    lower_priority(lane)  # once loaded: a spawned lane loads its models at full speed
    try:
        conn.send_bytes(wire.encode(wire.Ready({n: model_meta(n, nlp) for n, nlp in nlps.items()})))
    except (BrokenPipeError, OSError):  # stopped while loading: the parent has hung up
        return
    batcher = Batcher(conn, max_batch, max_wait, wait_fraction)
    # The loaded models out of the collector's sight, so full collections stop walking them, as
    # prefork.preload does before forking lanes (there they are frozen already). Measured on a
    # spawned lane at 32 connections, 1 worker: 0.812 against 0.798 x offline nlp.pipe (median
    # of three runs: within this machine's noise, but never behind).
    gc.collect()
    gc.freeze()
    while True:
        try:
            batch = batcher.next_batch()
        except (EOFError, OSError):
            return
        started = time.perf_counter()
        results = run_batch(nlps, batch)
        seconds = time.perf_counter() - started
        batcher.done(len(batch), seconds)
        try:
            conn.send_bytes(wire.encode(wire.Results(results, seconds)))
        except (BrokenPipeError, OSError):
            return
