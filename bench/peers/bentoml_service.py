"""BentoML peer: `bentoml serve bench.peers.bentoml_service:EntitiesService --port PORT`.
POST /entities {"texts": [text]} answers [entities JSON].

Adaptive batching needs a batchable API, whose input and output are lists that BentoML
concatenates across requests and splits again: so a request sends a list of one text and gets a
list of one answer (the same answer as the service's, one level down)."""

from typing import Any

import bentoml

from bench.peers.common import MAX_BATCH, Entities


@bentoml.service(workers=1, traffic={"timeout": 30})
class EntitiesService:
    def __init__(self) -> None:
        self.model = Entities()

    # max_latency_ms: the latency budget the adaptive batcher works within (its default is 60 s;
    # 10 s keeps c=128 well within it).
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)  # type: ignore[untyped-decorator]
    def entities(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.model(texts)
