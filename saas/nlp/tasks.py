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

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spacy.tokens import Doc

from saas.nlp import serializers

if TYPE_CHECKING:  # the inference process imports this module: keep the database layer out of it
    from saas.keys.service import Principal

_TAGGING = frozenset({"tagger", "morphologizer", "attribute_ruler", "lemmatizer"})

TASKS: dict[str, tuple[Callable[..., dict[str, Any]], frozenset[str]]] = {
    "entities": (serializers.entities, _TAGGING),
    "extractions": (serializers.extractions, _TAGGING),
    "tokens": (serializers.tokens, frozenset({"ner"})),
    "dependencies": (serializers.dependencies, frozenset({"ner", "lemmatizer"})),
    "sentence-dependencies": (serializers.sentence_dependencies, frozenset({"ner", "lemmatizer"})),
}


def skipped_components(task: str, pipe_names: list[str]) -> list[str]:
    _, skip = TASKS[task]
    return [name for name in pipe_names if name in skip]


def serialize(task: str, doc: Doc, options: dict[str, Any] | None) -> dict[str, Any]:
    serializer, _ = TASKS[task]
    return serializer(doc, **(options or {}))


# Tasks with a batch endpoint too: POST /v1/{model}/{task}/batch, one unit per text.
BATCH_TASKS = ("entities", "tokens", "dependencies", "sentence-dependencies")
_BATCH_TASK = "|".join(re.escape(task) for task in BATCH_TASKS)

# Customer NLP requests: the ones that are billed and count against the monthly quota.
_BILLABLE_PATH = re.compile(rf"^/v1/(?:extractions|[^/]+/(?:{_BATCH_TASK})(?:/batch)?)$")
BATCH_PATH = re.compile(rf"^/v1/(?P<model>[^/]+)/(?P<task>{_BATCH_TASK})/batch$")


def is_billable(method: str, path: str) -> bool:
    return method == "POST" and _BILLABLE_PATH.match(path) is not None


def is_batch(method: str, path: str) -> bool:
    return method == "POST" and BATCH_PATH.match(path) is not None


def batch_too_large(principal: "Principal", count: int) -> str:
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
