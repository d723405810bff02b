"""Concurrent admissions share Redis round trips (saas/ratelimit/pipelining.py), on a real Redis:
the same decisions as calls sent one by one, each script still atomic, and a Redis that lost
its scripts (restarted, flushed) costs no admission."""

import asyncio
import uuid

import redis
import redis.asyncio as aioredis

from saas.ratelimit.pipelining import ScriptPipeline
from saas.ratelimit.redis_limiter import RedisLimiter
from saas.ratelimit.windows import parse_windows
from tests.support.polling import eventually_async
from tests.support.servers import RedisServer
from tests.support.stores import redis_url

COUNT = """
redis.call('INCR', KEYS[1])
return {tonumber(ARGV[1]), redis.call('GET', KEYS[1])}
"""


class CountingPipeline(ScriptPipeline):
    """Counts the pipelines sent (the round trips), nothing else changed."""

    sent = 0

    async def _pipeline(self, calls):
        self.sent += 1
        return await super()._pipeline(calls)


def test_concurrent_calls_share_round_trips_and_keep_their_own_answers():
    async def scenario():
        client = aioredis.Redis.from_url(redis_url())
        key = f"test-pipelining-{uuid.uuid4().hex}"
        pipeline = CountingPipeline(client, COUNT)
        try:
            answers = await asyncio.gather(*(pipeline.call([key], [n]) for n in range(100)))
            alone = await pipeline.call([key], [100])
            return answers, alone, pipeline.sent
        finally:
            await client.delete(key)
            await client.aclose()

    answers, alone, sent = asyncio.run(scenario())
    # Each call gets its own answer, in order, and every script ran once.
    assert [int(echo) for echo, _ in answers] == list(range(100))
    assert sorted(int(count) for _, count in answers) == list(range(1, 101))
    assert int(alone[1]) == 101
    assert sent == 2  # the 100 of one turn of the event loop together, then the lone one


def test_a_caller_that_gave_up_before_its_call_left_is_not_counted():
    async def scenario():
        client = aioredis.Redis.from_url(redis_url())
        key = f"test-pipelining-{uuid.uuid4().hex}"
        pipeline = ScriptPipeline(client, COUNT)
        try:
            gave_up = asyncio.ensure_future(pipeline.call([key], [0]))
            kept = asyncio.ensure_future(pipeline.call([key], [1]))
            await asyncio.sleep(0)  # both queued, the pipeline not sent yet
            gave_up.cancel()  # what a timeout does
            echo, count = await kept
            return int(echo), int(count), int(await counted(client, key))
        finally:
            await client.delete(key)
            await client.aclose()

    assert asyncio.run(scenario()) == (1, 1, 1)


class HeldPipeline(ScriptPipeline):
    """The first pipeline is held (a stuck socket, as far as the callers can tell) until
    released; the others go through."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.held = False

    async def _pipeline(self, calls):
        if not self.held:
            self.held = True
            await self.release.wait()
        return await super()._pipeline(calls)


def test_a_stalled_pipeline_does_not_hold_the_next_calls():
    async def scenario():
        client = aioredis.Redis.from_url(redis_url())
        key = f"test-pipelining-{uuid.uuid4().hex}"
        pipeline = HeldPipeline(client, COUNT, stalled_after=0.05)
        try:
            first = asyncio.ensure_future(pipeline.call([key], [1]))
            await asyncio.sleep(0)
            second = await asyncio.wait_for(pipeline.call([key], [2]), 5)  # not held by first
            assert not first.done()
            pipeline.release.set()
            return int(second[0]), int((await first)[0]), int(await counted(client, key))
        finally:
            await client.delete(key)
            await client.aclose()

    assert asyncio.run(scenario()) == (2, 1, 2)


def test_a_pipeline_cancelled_at_shutdown_fails_its_callers_like_a_lost_connection():
    """They take their fallback (a Redis error); they are not cancelled themselves."""

    async def scenario():
        client = aioredis.Redis.from_url(redis_url())
        pipeline = HeldPipeline(client, COUNT)
        try:
            waiter = asyncio.ensure_future(pipeline.call(["never-counted"], [1]))
            assert await eventually_async(lambda: pipeline.held, interval=0.001)
            for task in list(pipeline._in_flight):
                task.cancel()
            return await asyncio.gather(waiter, return_exceptions=True)
        finally:
            await client.aclose()

    (outcome,) = asyncio.run(scenario())
    assert isinstance(outcome, redis.exceptions.ConnectionError)


def test_limiter_decisions_through_the_pipeline_count_exactly():
    """100 concurrent requests against 30/minute: exactly 30 admitted, as one by one."""
    windows = parse_windows("30/minute")

    async def scenario():
        client = aioredis.Redis.from_url(redis_url())
        limiter = RedisLimiter(client, prefix=f"test-pipelining-{uuid.uuid4().hex}")
        account = 7
        try:
            await limiter.load_scripts()
            assert limiter._pipeline is not None  # one Redis: the pipelined path
            decisions = await asyncio.gather(
                *(limiter.admit(account, windows, quota=None) for _ in range(100))
            )
            return decisions
        finally:
            await client.delete(limiter.window_key(account, windows[0]))
            await client.aclose()

    decisions = asyncio.run(scenario())
    assert sum(decision.admitted for decision in decisions) == 30
    remaining = sorted(d.windows[0].remaining for d in decisions if d.admitted)
    assert remaining == list(range(30))  # each admission saw the count after its own


def test_scripts_lost_by_redis_are_loaded_again(tmp_path):
    """SCRIPT FLUSH (what a restart does) on a Redis of the test's own: the next calls get
    NOSCRIPT, the script is loaded once more, and every call is answered, counted once."""
    server = RedisServer(tmp_path)
    server.start()

    async def scenario():
        client = aioredis.Redis.from_url(server.url)
        pipeline = CountingPipeline(client, COUNT)
        try:
            await pipeline.call(["counter"], [0])
            await client.script_flush()
            answers = await asyncio.gather(*(pipeline.call(["counter"], [n]) for n in range(10)))
            return answers, int(await counted(client, "counter"))
        finally:
            await client.aclose()

    try:
        answers, count = asyncio.run(scenario())
    finally:
        server.stop()
    assert [int(echo) for echo, _ in answers] == list(range(10))
    assert count == 11  # nothing ran twice


def test_a_failed_pipeline_fails_its_callers_and_the_next_one_works(tmp_path):
    server = RedisServer(tmp_path)
    server.start()

    async def scenario():
        client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        pipeline = ScriptPipeline(client, COUNT)
        try:
            await pipeline.call(["counter"], [0])
            server.stop()
            failed = await asyncio.gather(
                *(pipeline.call(["counter"], [n]) for n in range(5)), return_exceptions=True
            )
            server.start()  # the same port, empty: the scripts are lost too
            after = await pipeline.call(["counter"], [1])
            return failed, after
        finally:
            await client.aclose()

    try:
        failed, after = asyncio.run(scenario())
    finally:
        server.stop()
    assert all(isinstance(result, Exception) for result in failed)
    assert int(after[0]) == 1 and int(after[1]) == 1  # a fresh Redis (no --save): counted once


async def counted(client: aioredis.Redis, key: str) -> bytes | str:
    """The counter's value, which the test's calls must have set."""
    value = await client.get(key)
    assert value is not None, key
    return value
