"""The long-text lane (saas/nlp/pool.py): texts from `long_text_chars` on are answered by a
second inference process, exactly as nlp(text) annotates them, while short texts keep being
answered by the first; a dead lane fails only its own waiters and is replaced."""

import asyncio
import os
import signal

import orjson
import pytest

from saas.nlp.lane import Lane
from saas.nlp.pool import InferencePool
from saas.problems.errors import Overloaded
from tests.support.nlp import ENGLISH_ONLY, MODEL, lane_metric, queued, read_texts
from tests.support.polling import eventually_async

LONG_FROM = 5_000
SHORT = "Angela Merkel met Emmanuel Macron in Berlin."


def long_text(chars: int) -> str:
    """Real sentences (the test corpus, repeated) cut at a word boundary near `chars`."""
    corpus = " ".join(read_texts("texts.txt"))
    text = " ".join([corpus] * (chars // len(corpus) + 1))
    return text[:chars].rsplit(" ", 1)[0]


def priority(lane: Lane) -> int:
    assert lane.pid is not None
    return os.getpriority(os.PRIO_PROCESS, lane.pid)


def texts_answered(lane: str) -> float:
    return lane_metric("saas_inference_batch_texts_sum", lane)


@pytest.fixture(scope="module")
def pool_loop():
    """One two-lane pool for the module, on a loop of its own (the lanes' transports belong
    to the loop they were started on)."""
    loop = asyncio.new_event_loop()
    pool = InferencePool(ENGLISH_ONLY, long_text_chars=LONG_FROM)
    loop.run_until_complete(pool.start())
    yield pool, loop
    loop.run_until_complete(pool.stop())
    loop.close()


def test_long_texts_take_the_long_lane_and_get_nlps_exact_answer(pool_loop, nlp):
    pool, loop = pool_loop
    text = long_text(20_000)
    assert pool.lane_of(text) is pool.long and pool.lane_of(SHORT) is pool.short
    # The long lane yields the CPU to the short one (saas/nlp/inference_process.py: NICENESS).
    assert priority(pool.long) - priority(pool.short) == 10
    long_before, short_before = texts_answered("long"), texts_answered("short")
    entities = loop.run_until_complete(pool.run(MODEL, "entities", text))
    tokens = loop.run_until_complete(pool.run(MODEL, "tokens", text))
    assert texts_answered("long") == long_before + 2
    assert texts_answered("short") == short_before
    doc = nlp(text)  # the full pipeline, as the API promises
    assert [(e["start"], e["end"], e["type"]) for e in orjson.loads(entities)["entities"]] == [
        (e.start_char, e.end_char, e.label_) for e in doc.ents
    ]
    assert [(t["text"], t["lemma"], t["start"]) for t in orjson.loads(tokens)["tokens"]] == [
        (t.text, t.lemma_, t.idx) for t in doc
    ]


def test_a_short_text_is_answered_while_a_long_one_is_in_inference(pool_loop):
    pool, loop = pool_loop

    async def scenario() -> tuple[bool, bytes]:
        long = asyncio.ensure_future(pool.run(MODEL, "dependencies", long_text(30_000)))
        assert await eventually_async(
            lambda: queued("long") == 1, 60, 0.01
        )  # in the long lane's pipe
        short = await pool.run(MODEL, "dependencies", SHORT)
        long_still_running = not long.done()
        await long
        return long_still_running, short

    long_still_running, short = loop.run_until_complete(scenario())
    assert long_still_running  # ~1.5 s of inference left when the short one was answered
    assert b"Merkel" in short


def test_a_batch_mixing_lengths_keeps_its_order(pool_loop):
    pool, loop = pool_loop
    texts = [SHORT, long_text(6_000), "Paris is in France.", long_text(7_000)]

    async def scenario() -> tuple[list[object], list[bytes]]:
        batch = await pool.run_many(MODEL, "entities", texts)
        singles = [await pool.run(MODEL, "entities", text) for text in texts]
        return batch, singles

    long_before = texts_answered("long")
    batch, singles = loop.run_until_complete(scenario())
    assert batch == singles
    assert texts_answered("long") == long_before + 4  # two in the batch, two alone


def test_the_long_lane_is_bounded_in_characters_and_a_split_batch_checks_both(pool_loop):
    pool, loop = pool_loop
    pool.long.max_queued_chars = 20_000

    async def scenario() -> tuple[list[str], float]:
        refused = []
        running = asyncio.ensure_future(pool.run(MODEL, "entities", long_text(15_000)))
        assert await eventually_async(lambda: queued("long") == 1, 60, 0.01)
        short_before = texts_answered("short")
        for texts in ([long_text(6_000)], [SHORT, long_text(6_000)]):
            try:
                await pool.run_many(MODEL, "entities", texts)
            except Overloaded:
                refused.append("refused")
        await running
        await pool.run(MODEL, "entities", long_text(6_000))  # room again
        # A short text sent would have been answered by now (a refused split batch still
        # awaits the lane that took its share).
        return refused, texts_answered("short") - short_before

    try:
        refused, short_answered_meanwhile = loop.run_until_complete(scenario())
    finally:
        pool.long.max_queued_chars = None
    assert refused == ["refused", "refused"]
    assert short_answered_meanwhile == 0  # the split batch sent nothing before it was refused


def test_a_dead_long_lane_fails_its_waiters_only_and_is_replaced(pool_loop):
    pool, loop = pool_loop

    async def scenario() -> tuple[object, bytes, bytes]:
        lane = pool.long
        dying = lane.pid
        assert dying is not None
        waiting = asyncio.ensure_future(pool.run(MODEL, "entities", long_text(30_000)))
        assert await eventually_async(lambda: queued("long") == 1, 60, 0.01)
        os.kill(dying, signal.SIGKILL)
        outcome = await asyncio.gather(waiting, return_exceptions=True)
        short = await pool.run(MODEL, "entities", SHORT)  # the short lane never noticed
        assert await eventually_async(
            lambda: pool.ready and lane.pid != dying, 60, 0.01
        )  # a new process loaded
        return outcome[0], short, await pool.run(MODEL, "entities", long_text(LONG_FROM))

    failed, short, replaced = loop.run_until_complete(scenario())
    assert isinstance(failed, Overloaded) and failed.status_code == 503
    assert b"Merkel" in short
    assert orjson.loads(replaced)["entities"]


def test_no_long_lane_when_the_setting_is_zero() -> None:
    pool = InferencePool(ENGLISH_ONLY, long_text_chars=0)
    assert pool.long is None and pool.lanes == [pool.short]
    assert pool.lane_of(long_text(30_000)) is pool.short
