"""The inference pool and its lane: micro-batching, overload (503 + Retry-After), crash recovery."""

import asyncio
import os
import signal

import pytest

from saas.nlp.lane import InferenceFailed
from saas.nlp.pool import InferencePool
from saas.problems.errors import Overloaded
from tests.support.nlp import ENGLISH_ONLY, MODEL, lane_metric, queued, running
from tests.support.polling import eventually_async

TEXT = "Angela Merkel met Emmanuel Macron in Berlin."


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer():
    async def scenario() -> tuple[list[bytes], list[bytes], float]:
        pool = InferencePool(ENGLISH_ONLY, max_batch=16)
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
        pool = InferencePool(ENGLISH_ONLY, max_queue=4)
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
    async def scenario() -> tuple[list[bytes | InferenceFailed], object]:
        pool = InferencePool(ENGLISH_ONLY, max_queue=4)
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
    async def scenario() -> tuple[list[bytes | BaseException], bytes]:
        pool = InferencePool(ENGLISH_ONLY)
        await pool.start()
        try:
            pending = [
                asyncio.ensure_future(pool.run(MODEL, "entities", TEXT * 50)) for _ in range(50)
            ]
            # Killed with the texts in its pipe.
            assert await eventually_async(lambda: queued("short") == 50, 60, 0.01)
            assert pool.short.pid is not None
            os.kill(pool.short.pid, signal.SIGKILL)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            # The replacement has loaded its model.
            assert await eventually_async(lambda: pool.ready, 60, 0.01)
            return outcomes, await pool.run(MODEL, "entities", TEXT)
        finally:
            await pool.stop()

    outcomes, after = run(scenario())
    assert all(isinstance(o, bytes | Overloaded) for o in outcomes)
    assert any(isinstance(o, Overloaded) for o in outcomes)
    assert b"Merkel" in after


def test_stop_ends_a_replacement_still_loading() -> None:
    async def scenario() -> tuple[set[asyncio.Task[object]], bool, bool]:
        pool = InferencePool(ENGLISH_ONLY)
        await pool.start()
        first = pool.short.pid
        assert first is not None
        try:
            os.kill(first, signal.SIGKILL)
            # The death is noticed and a replacement is loading its model (for about a second).
            assert await eventually_async(lambda: pool.short.pid not in (None, first), 60, 0.01)
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
