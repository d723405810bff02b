"""The long-text lane (saas/nlp/engine.py): texts from `long_text_chars` on are answered by a
second inference process, exactly as nlp(text) annotates them, while short texts keep being
answered by the first; a dead lane fails only its own waiters and is replaced."""

import asyncio
import os
import signal

import orjson
import pytest

from saas.nlp.engine import Engine, Lane
from saas.problems.errors import Overloaded
from tests.support.nlp import ENGLISH_ONLY, MODEL, read_texts
from tests.support.polling import eventually_async

LONG_FROM = 5_000
SHORT = "Angela Merkel met Emmanuel Macron in Berlin."


def long_text(chars: int) -> str:
    """Real sentences (the test corpus, repeated) cut at a word boundary near `chars`."""
    corpus = " ".join(read_texts("texts.txt"))
    text = " ".join([corpus] * (chars // len(corpus) + 1))
    return text[:chars].rsplit(" ", 1)[0]


def priority(lane: Lane) -> int:
    assert lane._child is not None and lane._child.process.pid is not None
    return os.getpriority(os.PRIO_PROCESS, lane._child.process.pid)


@pytest.fixture(scope="module")
def engine_loop():
    """One two-lane engine for the module, on a loop of its own (the lanes' transports belong
    to the loop they were started on)."""
    loop = asyncio.new_event_loop()
    engine = Engine(ENGLISH_ONLY, long_text_chars=LONG_FROM)
    loop.run_until_complete(engine.start())
    yield engine, loop
    loop.run_until_complete(engine.stop())
    loop.close()


def test_long_texts_take_the_long_lane_and_get_nlps_exact_answer(engine_loop, nlp):
    engine, loop = engine_loop
    text = long_text(20_000)
    assert engine.lane_of(text) is engine.long and engine.lane_of(SHORT) is engine.short
    # The long lane yields the CPU to the short one (saas/nlp/worker.py: NICENESS).
    assert priority(engine.long) - priority(engine.short) == 10
    long_before, short_before = engine.long.texts_done, engine.short.texts_done
    entities = loop.run_until_complete(engine.run(MODEL, "entities", text))
    tokens = loop.run_until_complete(engine.run(MODEL, "tokens", text))
    assert engine.long.texts_done == long_before + 2
    assert engine.short.texts_done == short_before
    doc = nlp(text)  # the full pipeline, as the API promises
    assert [(e["start"], e["end"], e["type"]) for e in orjson.loads(entities)["entities"]] == [
        (e.start_char, e.end_char, e.label_) for e in doc.ents
    ]
    assert [(t["text"], t["lemma"], t["start"]) for t in orjson.loads(tokens)["tokens"]] == [
        (t.text, t.lemma_, t.idx) for t in doc
    ]


def test_a_short_text_is_answered_while_a_long_one_is_in_inference(engine_loop):
    engine, loop = engine_loop

    async def scenario() -> tuple[bool, bytes]:
        sent = engine.long.texts_sent
        long = asyncio.ensure_future(engine.run(MODEL, "dependencies", long_text(30_000)))
        # In the long lane's pipe.
        assert await eventually_async(lambda: engine.long.texts_sent == sent + 1, 60, 0.01)
        short = await engine.run(MODEL, "dependencies", SHORT)
        long_still_running = not long.done()
        await long
        return long_still_running, short

    long_still_running, short = loop.run_until_complete(scenario())
    assert long_still_running  # ~1.5 s of inference left when the short one was answered
    assert b"Merkel" in short


def test_a_batch_mixing_lengths_keeps_its_order(engine_loop):
    engine, loop = engine_loop
    texts = [SHORT, long_text(6_000), "Paris is in France.", long_text(7_000)]

    async def scenario() -> tuple[list[object], list[bytes]]:
        batch = await engine.run_many(MODEL, "entities", texts)
        singles = [await engine.run(MODEL, "entities", text) for text in texts]
        return batch, singles

    long_before = engine.long.texts_done
    batch, singles = loop.run_until_complete(scenario())
    assert batch == singles
    assert engine.long.texts_done == long_before + 4  # two in the batch, two alone


def test_the_long_lane_is_bounded_in_characters_and_a_split_batch_checks_both(engine_loop):
    engine, loop = engine_loop
    engine.long.max_queued_chars = 20_000

    async def scenario() -> tuple[list[str], int]:
        refused = []
        sent = engine.long.texts_sent
        running = asyncio.ensure_future(engine.run(MODEL, "entities", long_text(15_000)))
        assert await eventually_async(lambda: engine.long.texts_sent == sent + 1, 60, 0.01)
        short_sent = engine.short.texts_sent
        for texts in ([long_text(6_000)], [SHORT, long_text(6_000)]):
            try:
                await engine.run_many(MODEL, "entities", texts)
            except Overloaded:
                refused.append("refused")
        await asyncio.sleep(0)  # let an outbox flush, if anything was queued
        short_sent_meanwhile = engine.short.texts_sent - short_sent
        await running
        await engine.run(MODEL, "entities", long_text(6_000))  # room again
        return refused, short_sent_meanwhile

    try:
        refused, short_sent_meanwhile = loop.run_until_complete(scenario())
    finally:
        engine.long.max_queued_chars = None
    assert refused == ["refused", "refused"]
    assert short_sent_meanwhile == 0  # the split batch sent nothing before it was refused


def test_a_dead_long_lane_fails_its_waiters_only_and_is_replaced(engine_loop):
    engine, loop = engine_loop

    async def scenario() -> tuple[object, bytes, bytes]:
        lane = engine.long
        dying = lane._child
        assert dying is not None
        sent = lane.texts_sent
        waiting = asyncio.ensure_future(engine.run(MODEL, "entities", long_text(30_000)))
        assert await eventually_async(lambda: lane.texts_sent == sent + 1, 60, 0.01)
        os.kill(dying.process.pid, signal.SIGKILL)
        outcome = await asyncio.gather(waiting, return_exceptions=True)
        short = await engine.run(MODEL, "entities", SHORT)  # the short lane never noticed
        # A new process loaded.
        assert await eventually_async(lambda: engine.ready and lane._child is not dying, 60, 0.01)
        return outcome[0], short, await engine.run(MODEL, "entities", long_text(LONG_FROM))

    failed, short, replaced = loop.run_until_complete(scenario())
    assert isinstance(failed, Overloaded) and failed.status_code == 503
    assert b"Merkel" in short
    assert orjson.loads(replaced)["entities"]


def test_no_long_lane_when_the_setting_is_zero() -> None:
    engine = Engine(ENGLISH_ONLY, long_text_chars=0)
    assert engine.long is None and engine.lanes == [engine.short]
    assert engine.lane_of(long_text(30_000)) is engine.short
