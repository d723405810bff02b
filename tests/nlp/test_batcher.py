"""How the inference process forms micro-batches (saas/nlp/inference_process.py: Batcher),
over a real pipe."""

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection

from saas.nlp import wire
from saas.nlp.inference_process import Batcher


def request(n: int) -> wire.TextRequest:
    return wire.TextRequest(n, "en_core_web_sm", "entities", f"text {n}", None)


def make_batcher(
    max_batch: int = 8, max_wait: float = 1.0, fraction: float = 0.5
) -> tuple[Connection, Batcher]:
    parent, child = multiprocessing.Pipe()
    return parent, Batcher(child, max_batch, max_wait, fraction)


def send(conn: Connection, *numbers: int) -> None:
    conn.send_bytes(wire.encode(wire.Requests([request(n) for n in numbers])))


def test_takes_everything_queued_up_to_max_batch() -> None:
    parent, batcher = make_batcher(max_batch=3)
    send(parent, 1, 2)
    send(parent, 3, 4)
    assert [r.request_id for r in batcher.next_batch()] == [1, 2, 3]
    assert [r.request_id for r in batcher.next_batch()] == [4]


def test_a_lone_client_never_waits() -> None:
    parent, batcher = make_batcher()
    batcher.done(1, 10.0)  # last batch: one text, however slow
    send(parent, 1)
    started = time.perf_counter()
    assert [r.request_id for r in batcher.next_batch()] == [1]
    assert time.perf_counter() - started < 0.5


def test_under_load_waits_for_the_clients_of_the_last_batch() -> None:
    parent, batcher = make_batcher()
    batcher.done(3, 0.4)  # may wait up to 0.2 s for three texts
    send(parent, 1)
    late = threading.Timer(0.05, send, (parent, 2, 3))
    late.start()
    assert [r.request_id for r in batcher.next_batch()] == [1, 2, 3]
    late.join()


def test_the_wait_is_bounded() -> None:
    parent, batcher = make_batcher(max_wait=0.05)
    batcher.done(4, 10.0)  # half of 10 s, capped at 0.05 s
    send(parent, 1)
    started = time.perf_counter()
    assert [r.request_id for r in batcher.next_batch()] == [1]
    assert 0.04 <= time.perf_counter() - started < 1.0
