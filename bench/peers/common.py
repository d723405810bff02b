"""What every peer shares with the service: the model, the components the entities endpoint
runs, and its serializer, so that the answers are identical (checked by bench.throughput)."""

import os
from typing import Any

import spacy
from spacy.language import Language

from saas.nlp import serializers
from saas.nlp.tasks import skipped_components

# Each peer's batch cap: the service's default engine_max_batch is 64, but the peers' documented
# examples use small batches; 32 is the concurrency the goals are measured at.
MAX_BATCH = int(os.environ.get("BENCH_PEER_MAX_BATCH", "32"))


class Entities:
    def __init__(self) -> None:
        self.nlp: Language = spacy.load(os.environ.get("BENCH_MODEL_PACKAGE", "en_core_web_sm"))
        self.disable = skipped_components("entities", self.nlp.pipe_names)
        self(["Warm up in London."])  # the first call allocates; not part of any request

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        docs = self.nlp.pipe(texts, disable=self.disable, batch_size=len(texts) or 1)
        return [serializers.entities(doc) for doc in docs]
