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

from saas.auth.principal import Principal
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


# Tasks with a batch endpoint too: POST /v1/{model}/{task}/batch, one unit per text.
BATCH_TASKS = ("entities", "tokens", "dependencies", "sentence-dependencies")


def unknown_model(model: str) -> str:
    """The 404 message, the same from the admission step and from the route."""
    return f"Model '{model}' not found. GET /v1/models lists the available models."


def model_not_in_plan(model: str) -> str:
    """The 403 message, the same from the admission step and from the route."""
    return f"Your plan does not include the model '{model}'."


def batch_too_large(principal: Principal, count: int) -> str:
    """The 413 message, the same from the admission step and from the route."""
    limit = principal.batch_limit
    if limit < principal.max_batch_texts:
        why = (
            f"each text counts as one request, and the smallest window of your rate limit"
            f" ({principal.rate_limit}) holds {limit}"
        )
    else:
        why = "your plan's max_batch_texts"
    return f"This batch has {count} texts; at most {limit} are allowed ({why})."
