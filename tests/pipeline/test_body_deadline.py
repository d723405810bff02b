"""BodyDeadline (saas/pipeline/body_limit.py): a late body becomes 408, any other cancellation
(a server shutting down) goes on as a cancellation. The 408 on a real server, slowloris and all:
tests/e2e/test_hostile_input.py."""

import asyncio

import pytest

from saas.pipeline.body_limit import BodyDeadline, BodyTooSlow


async def never() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_body_still_waited_for_at_the_deadline_is_408() -> None:
    async def scenario() -> None:
        deadline = BodyDeadline(0.05)
        with pytest.raises(BodyTooSlow) as refused:
            await deadline.receive(never)
        assert refused.value.status_code == 408
        assert refused.value.headers == {"Connection": "close"}
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        with pytest.raises(BodyTooSlow):  # and at any later read
            await deadline.receive(never)

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_another_cancellation_is_not_taken_for_a_late_body() -> None:
    async def scenario() -> None:
        deadline = BodyDeadline(60)
        reader = asyncio.create_task(deadline.receive(never))
        await asyncio.sleep(0.01)  # the reader is waiting for the body when it is cancelled
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        deadline.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_body_that_arrives_in_time_is_passed_on() -> None:
    async def scenario() -> None:
        deadline = BodyDeadline(0.05)

        async def body() -> dict[str, object]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        assert (await deadline.receive(body))["body"] == b"{}"
        deadline.cancel()
        await asyncio.sleep(0.1)  # the cancelled timer never fires
        assert not deadline.expired

    asyncio.run(scenario())
