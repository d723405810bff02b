"""The inference process: micro-batching, overload (503 + Retry-After), crash recovery."""

import asyncio
import os
import signal

import pytest

from saas.nlp.engine import Engine, InferenceFailed
from saas.problems.errors import Overloaded
from tests.support.nlp import ENGLISH_ONLY, MODEL
from tests.support.polling import eventually_async

TEXT = "Angela Merkel met Emmanuel Macron in Berlin."


def child_pid(engine: Engine) -> int:
    """The process id of the short lane's inference process, which the test kills."""
    child = engine.short._child
    assert child is not None and child.process.pid is not None
    return child.process.pid


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer():
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        engine = Engine(ENGLISH_ONLY, max_batch=16)
        await engine.start()
        try:
            texts = [
                "Barack Obama visited Paris.",
                "Angela Merkel lives in Berlin.",
                "Tokyo is the capital of Japan.",
            ] * 20
            answers = await asyncio.gather(*(engine.run(MODEL, "entities", t) for t in texts))
            batches = engine.short.batches_done
            singles = [await engine.run(MODEL, "entities", t) for t in texts[:3]]
            return answers, singles, batches
        finally:
            await engine.stop()

    answers, singles, batches = run(scenario())
    assert len(answers) == 60
    assert 60 / 16 <= batches < 30  # micro-batches of up to max_batch, not one text per call
    assert answers[:3] == singles  # each answer belongs to its own text
    assert answers[:3] * 20 == answers
    assert b'"Obama"' in answers[0] or b'"Barack Obama"' in answers[0]
    assert b'"Berlin"' in answers[1] and b'"Japan"' in answers[2]


def test_full_queue_answers_503_with_retry_after():
    async def scenario() -> list[object]:
        engine = Engine(ENGLISH_ONLY, max_queue=4)
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.run(MODEL, "entities", TEXT * 20) for _ in range(40)),
                return_exceptions=True,
            )
        finally:
            await engine.stop()

    results = run(scenario())
    rejected = [r for r in results if isinstance(r, Overloaded)]
    answered = [r for r in results if isinstance(r, bytes)]
    assert rejected and answered
    assert len(rejected) + len(answered) == 40
    assert all(r.status_code == 503 and r.headers["Retry-After"] == "1" for r in rejected)


def test_a_batch_larger_than_the_queue_is_taken_only_when_idle():
    async def scenario() -> tuple[list[bytes | InferenceFailed], object]:
        engine = Engine(ENGLISH_ONLY, max_queue=4)
        await engine.start()
        try:
            alone = await engine.run_many(MODEL, "entities", [TEXT] * 6)
            busy = asyncio.gather(*(engine.run(MODEL, "entities", TEXT * 20) for _ in range(4)))
            await asyncio.sleep(0)
            try:
                await engine.run_many(MODEL, "entities", [TEXT] * 6)
                crowded: object = None
            except Overloaded as exc:
                crowded = exc
            await busy
            return alone, crowded
        finally:
            await engine.stop()

    alone, crowded = run(scenario())
    assert len(alone) == 6 and len(set(alone)) == 1
    assert isinstance(crowded, Overloaded)


def test_a_killed_inference_process_is_replaced():
    async def scenario() -> tuple[list[bytes | BaseException], bytes]:
        engine = Engine(ENGLISH_ONLY)
        await engine.start()
        try:
            pending = [
                asyncio.ensure_future(engine.run(MODEL, "entities", TEXT * 50)) for _ in range(50)
            ]
            # Killed with the texts in its pipe.
            assert await eventually_async(lambda: engine.short.texts_sent == 50, 60, 0.01)
            os.kill(child_pid(engine), signal.SIGKILL)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            # The replacement has loaded its model.
            assert await eventually_async(lambda: engine.ready, 60, 0.01)
            return outcomes, await engine.run(MODEL, "entities", TEXT)
        finally:
            await engine.stop()

    outcomes, after = run(scenario())
    assert all(isinstance(o, bytes | Overloaded) for o in outcomes)
    assert any(isinstance(o, Overloaded) for o in outcomes)
    assert b"Merkel" in after


def test_stop_ends_a_replacement_still_loading() -> None:
    async def scenario() -> tuple[set[asyncio.Task[object]], bool, int | None]:
        engine = Engine(ENGLISH_ONLY)
        await engine.start()
        first = engine.short._child
        assert first is not None
        try:
            os.kill(child_pid(engine), signal.SIGKILL)
            # The death is noticed and a replacement is loading its model (for about a second).
            assert await eventually_async(
                lambda: engine.short._child not in (None, first), 60, 0.01
            )
            replacement = engine.short._child
            assert replacement is not None and not replacement.ready.done()
        finally:
            await engine.stop()
        left = asyncio.all_tasks() - {asyncio.current_task()}
        return left, engine.short._child is None, replacement.process.exitcode

    left, no_child, exitcode = run(scenario())
    assert not left  # the restart task was cancelled and awaited, not left loading
    assert no_child and exitcode is not None


def test_start_fails_fast_when_a_model_cannot_load():
    async def scenario() -> None:
        engine = Engine({"broken": "no_such_spacy_package"}, start_timeout=60)
        await engine.start()

    with pytest.raises(RuntimeError, match="while loading models"):
        run(scenario())
