"""A worker's inference processes: its lanes (lane.py), and which one a text goes to.

`InferencePool.run()` queues a text and awaits its JSON answer. The pool has one lane for short
texts and, with `long_text_chars`, a second one for texts at least that long: inference runs one
batch at a time, so a 100,000-character text (~7 s) in the only lane would hold up every short
text behind it. The long lane gives the OS two processes to share the CPU between, and short
texts keep their latency. Each text is whole in its lane, so answers stay exactly nlp(text)'s
(cutting a text into sentences would change the parser's and tok2vec's context).
"""

import asyncio
from typing import Any

from saas.nlp.lane import InferenceFailed, Lane


class InferencePool:
    """The lanes, and which one a text goes to."""

    def __init__(
        self,
        models: dict[str, str],
        *,
        long_text_chars: int | None = None,
        long_max_queued_chars: int | None = None,
        max_batch: int = 64,
        max_wait: float = 0.02,
        wait_fraction: float = 0.0,
        max_queue: int = 2048,
        start_timeout: float = 180.0,
    ) -> None:
        self.long_text_chars = long_text_chars or 0  # 0 or None: one lane for every text

        def lane(name: str, max_queued_chars: int | None = None) -> Lane:
            return Lane(
                models,
                name=name,
                max_batch=max_batch,
                max_wait=max_wait,
                wait_fraction=wait_fraction,
                max_queue=max_queue,
                max_queued_chars=max_queued_chars,
                start_timeout=start_timeout,
            )

        self.short = lane("short")
        self.long = lane("long", long_max_queued_chars) if self.long_text_chars else None
        self.lanes = [self.short] if self.long is None else [self.short, self.long]

    @property
    def meta(self) -> dict[str, dict[str, Any]]:
        return self.short.meta

    @property
    def ready(self) -> bool:
        return all(lane.ready for lane in self.lanes)

    def lane_of(self, text: str) -> Lane:
        if self.long is not None and len(text) >= self.long_text_chars:
            return self.long
        return self.short

    async def start(self) -> None:
        # Side by side: a spawned lane spends seconds loading its models.
        outcomes = await asyncio.gather(
            *(lane.start() for lane in self.lanes), return_exceptions=True
        )
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]

    async def stop(self) -> None:
        for lane in self.lanes:
            await lane.stop()

    async def run(
        self, model: str, task: str, text: str, options: dict[str, Any] | None = None
    ) -> bytes:
        """The JSON answer for one text, as bytes ready to send; raises InferenceFailed (500) if
        it fails inside spaCy."""
        (payload,) = await self.lane_of(text).run_many(model, task, [text], options)
        if isinstance(payload, InferenceFailed):
            raise payload
        return payload

    async def run_many(
        self, model: str, task: str, texts: list[str], options: dict[str, Any] | None = None
    ) -> list[bytes | InferenceFailed]:
        """The JSON answer for each text, in the texts' order, or InferenceFailed for a text that
        failed inside spaCy. Each text goes to its lane; a lane that is full or restarting fails the
        whole call with 503."""
        positions: dict[Lane, list[int]] = {}
        for index, text in enumerate(texts):
            positions.setdefault(self.lane_of(text), []).append(index)
        if len(positions) == 1:  # the usual case: no regrouping
            (lane,) = positions
            return await lane.run_many(model, task, texts, options)
        # Both lanes must have room before either starts: a 503 after the long lane has worked
        # through its share would waste that work and hold up everyone's long texts.
        for lane, indexes in positions.items():
            lane.check_room([texts[i] for i in indexes])
        runs = [
            lane.run_many(model, task, [texts[i] for i in indexes], options)
            for lane, indexes in positions.items()
        ]
        # return_exceptions: the other lane's answers must be awaited before raising.
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        payloads: list[bytes | InferenceFailed] = [b""] * len(texts)
        for indexes, outcome in zip(positions.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            for index, payload in zip(indexes, outcome, strict=True):
                payloads[index] = payload
        return payloads
