"""The engine skips pipeline components per endpoint (saas/nlp/tasks.py). This proves, on real
text, that every answer still equals the one from the full default pipeline, `nlp(text)`."""

import orjson
import pytest

from saas.nlp.tasks import TASKS, serialize, skipped_components
from saas.nlp.worker import annotate

EXTRA_TEXTS = [
    "  Leading spaces and\ttabs\nand newlines in Paris.\n\nA new paragraph about Berlin.  ",
    "one",
    "!!!",
    "Emoji only 🎉🎉🎉 then Paris",
]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_skipping_components_changes_no_answer(nlp, texts, task):  # type: ignore[no-untyped-def]
    corpus = texts + EXTRA_TEXTS
    expected = [serialize(task, nlp(text), None) for text in corpus]
    batched = [
        orjson.loads(payload) for payload in annotate(nlp, task, corpus, [None] * len(corpus))
    ]
    one_by_one = [orjson.loads(annotate(nlp, task, [text], [None])[0]) for text in corpus]
    assert batched == expected
    assert one_by_one == expected


@pytest.mark.parametrize("task", sorted(TASKS))
def test_french_answers_unchanged_too(nlp_fr, texts_fr, task):  # type: ignore[no-untyped-def]
    expected = [serialize(task, nlp_fr(text), None) for text in texts_fr]
    got = annotate(nlp_fr, task, texts_fr, [None] * len(texts_fr))
    assert [orjson.loads(payload) for payload in got] == expected


def test_tasks_do_skip_components(nlp):  # type: ignore[no-untyped-def]
    """Guards the speed-up itself: entities must not run the tagger stack, tokens not ner."""
    assert set(skipped_components("entities", nlp.pipe_names)) == {
        "tagger",
        "attribute_ruler",
        "lemmatizer",
    }
    assert skipped_components("tokens", nlp.pipe_names) == ["ner"]
