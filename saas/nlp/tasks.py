"""What each endpoint asks of spaCy: the serializer and the components it may skip.

A component is skipped only where tests/nlp/test_pipeline_equivalence.py shows, on real text, that
the answer stays identical to the full pipeline's `nlp(text)`. For en_core_web_sm 3.8.0 (counts
from the 15,707 texts of bench/corpus.py):
- entities need tok2vec+parser+ner: `ner` alone is faster but the parser's sentence boundaries
  bound entities, so spans differ in 8 texts (0.05%, all dialogue with several sentences).
- tokens need all but ner: without the parser, POS (via attribute_ruler) and so lemmas change
  (74 texts, 0.5%).
- dependencies need the tagger (the `tag` of each word) and parser, not the lemmatizer or ner.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spacy.tokens import Doc

from saas.nlp import serializers

_TAGGING = frozenset({"tagger", "morphologizer", "attribute_ruler", "lemmatizer"})


@dataclass(frozen=True, slots=True)
class Task:
    serializer: Callable[..., dict[str, Any]]
    skipped: frozenset[str]  # components left out of its pipeline, where present


TASKS: dict[str, Task] = {
    "entities": Task(serializers.entities, _TAGGING),
    "extractions": Task(serializers.extractions, _TAGGING),
    "tokens": Task(serializers.tokens, frozenset({"ner"})),
    "dependencies": Task(serializers.dependencies, frozenset({"ner", "lemmatizer"})),
    "sentence-dependencies": Task(
        serializers.sentence_dependencies, frozenset({"ner", "lemmatizer"})
    ),
}


def skipped_components(task: str, pipe_names: list[str]) -> list[str]:
    skipped = TASKS[task].skipped
    return [name for name in pipe_names if name in skipped]


def serialize(task: str, doc: Doc, options: dict[str, Any] | None) -> dict[str, Any]:
    return TASKS[task].serializer(doc, **(options or {}))
