"""Each endpoint's answer equals what spaCy itself gives for the same text, offsets included.
Expected values are built here straight from spaCy's Doc, independently of saas/nlp/serializers."""

import pytest

from tests.support.marks import SQLITE_ONLY
from tests.support.nlp import FRENCH, MODEL

# What these check does not depend on the database: run once, on the embedded default.
pytestmark = SQLITE_ONLY

URL = f"/v1/{MODEL}"
NON_ASCII = [
    "José García moved from Zürich to São Paulo in 2019 to work for Nestlé.",
    "I love New York 😀 and the Statue of Liberty 🗽 is my favourite landmark.",
    "Tokyo (東京) hosted the Olympic Games in 2021, a year later than planned.",
    "  Leading spaces and\ttabs\nand newlines in Paris.\n\nA new paragraph about Berlin.  ",
]


def test_done_when_example(client, customer):
    response = client.post(
        f"{URL}/entities",
        headers=customer.headers,
        json={"text": "John Doe is a Go developer at Google in London."},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "entities": [
            {"start": 0, "end": 8, "type": "PERSON", "text": "John Doe"},
            {"start": 30, "end": 36, "type": "ORG", "text": "Google"},
            {"start": 40, "end": 46, "type": "GPE", "text": "London"},
        ]
    }


def test_entities_match_spacy(client, customer, nlp, texts):
    for text in texts + NON_ASCII:
        response = client.post(f"{URL}/entities", headers=customer.headers, json={"text": text})
        assert response.status_code == 200, response.text
        got = response.json()["entities"]
        expected = [(e.start_char, e.end_char, e.label_, e.text) for e in nlp(text).ents]
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in got] == expected, text
        for entity in got:  # offsets are character offsets into the submitted text
            assert text[entity["start"] : entity["end"]] == entity["text"]


def test_searched_entity_filters_by_type_or_text(client, customer):
    text = "John Doe is a Go developer at Google in London."
    by_type = client.post(
        f"{URL}/entities", headers=customer.headers, json={"text": text, "searched_entity": "gpe"}
    )
    assert [e["text"] for e in by_type.json()["entities"]] == ["London"]
    by_text = client.post(
        f"{URL}/entities",
        headers=customer.headers,
        json={"text": text, "searched_entity": "GOOGLE"},
    )
    assert [e["type"] for e in by_text.json()["entities"]] == ["ORG"]
    unfiltered = client.post(
        f"{URL}/entities", headers=customer.headers, json={"text": text, "searched_entity": None}
    )
    assert len(unfiltered.json()["entities"]) == 3


def test_tokens_match_spacy(client, customer, nlp, texts):
    for text in texts[:15] + NON_ASCII:
        response = client.post(f"{URL}/tokens", headers=customer.headers, json={"text": text})
        assert response.status_code == 200, response.text
        got = response.json()["tokens"]
        expected = [
            {
                "text": t.text,
                "lemma": t.lemma_,
                "start": t.idx,
                "end": t.idx + len(t),
                "index": t.i,
                "ws_after": t.whitespace_ == " ",
            }
            for t in nlp(text)
        ]
        assert got == expected, text
        assert all(text[t["start"] : t["end"]] == t["text"] for t in got)


def _expected_arcs(tokens, offset=0):
    arcs = []
    for t in tokens:
        if t.dep_ == "ROOT":
            continue
        i, h = t.i - offset, t.head.i - offset
        direction = "left" if i < h else "right"
        arcs.append((min(i, h), max(i, h), t.dep_, t.text, direction))
    return arcs


def test_dependencies_match_spacy(client, customer, nlp, texts):
    for text in texts[:15] + NON_ASCII:
        response = client.post(f"{URL}/dependencies", headers=customer.headers, json={"text": text})
        assert response.status_code == 200, response.text
        body = response.json()
        doc = nlp(text)
        assert body["words"] == [{"text": t.text, "tag": t.tag_} for t in doc]
        got = [(a["start"], a["end"], a["label"], a["text"], a["dir"]) for a in body["arcs"]]
        assert got == _expected_arcs(doc), text


def test_sentence_dependencies_match_spacy(client, customer, nlp, texts):
    multi_sentence = [t for t in texts if t.count(".") >= 2][:8] + NON_ASCII
    for text in multi_sentence:
        response = client.post(
            f"{URL}/sentence-dependencies", headers=customer.headers, json={"text": text}
        )
        assert response.status_code == 200, response.text
        got = response.json()["sentence_dependencies"]
        sents = list(nlp(text).sents)
        assert [s["sentence"] for s in got] == [s.text for s in sents]
        for item, sent in zip(got, sents, strict=True):
            deps = item["dependencies"]
            assert deps["words"] == [{"text": t.text, "tag": t.tag_} for t in sent]
            arcs = [(a["start"], a["end"], a["label"], a["text"], a["dir"]) for a in deps["arcs"]]
            assert arcs == _expected_arcs(sent, offset=sent.start)


def test_extractions_original_tutorial_shape(client, customer, nlp):
    sentence = "Barack Obama was born in Honolulu, Hawaii, on August 4, 1961."
    response = client.post("/v1/extractions", headers=customer.headers, json={"sentence": sentence})
    assert response.status_code == 200
    assert response.json() == {
        "extractions": [
            {
                "first_index": e.start_char,
                "last_index": e.end_char,
                "name": e.label_,
                "content": e.text,
            }
            for e in nlp(sentence).ents
        ]
    }


@pytest.mark.parametrize("path", ["versions", "version"])
def test_versions(client, customer, nlp, path):
    from spacy.about import __version__ as spacy_version

    response = client.get(f"{URL}/{path}", headers=customer.headers)
    assert response.status_code == 200
    assert response.json() == {
        "spacy": spacy_version,
        "model": f"{MODEL} {nlp.meta['version']}",
    }


def test_models_lists_what_the_plan_allows(client, make_customer):
    everything = make_customer()
    response = client.get("/v1/models", headers=everything.headers)
    assert response.status_code == 200
    assert [m["name"] for m in response.json()["models"]] == [MODEL, FRENCH]
    assert response.json()["models"][1] == {"name": FRENCH, "lang": "fr", "version": "3.8.0"}
    english_only = make_customer(models=[MODEL])
    listed = client.get("/v1/models", headers=english_only.headers).json()["models"]
    assert [m["name"] for m in listed] == [MODEL]
    french_only = make_customer(models=[FRENCH])
    listed = client.get("/v1/models", headers=french_only.headers).json()["models"]
    assert [m["name"] for m in listed] == [FRENCH]


def test_french_model_through_the_same_registry(client, make_customer):
    import spacy

    text = "Emmanuel Macron a rencontré Angela Merkel à Berlin."
    allowed = make_customer(models=[MODEL, FRENCH])
    response = client.post(f"/v1/{FRENCH}/entities", headers=allowed.headers, json={"text": text})
    assert response.status_code == 200
    expected = [(e.start_char, e.end_char, e.label_) for e in spacy.load(FRENCH)(text).ents]
    got = [(e["start"], e["end"], e["type"]) for e in response.json()["entities"]]
    assert got == expected and ("Berlin" in [e["text"] for e in response.json()["entities"]])
    english_only = make_customer(models=[MODEL])
    for path in ["entities", "tokens", "dependencies", "sentence-dependencies"]:
        response = client.post(
            f"/v1/{FRENCH}/{path}", headers=english_only.headers, json={"text": text}
        )
        assert response.status_code == 403, path
        assert FRENCH in response.json()["detail"]
    assert client.get(f"/v1/{FRENCH}/versions", headers=english_only.headers).status_code == 403


def test_unknown_extra_fields_are_ignored(client, customer):
    response = client.post(
        f"{URL}/entities",
        headers=customer.headers,
        json={"text": "Paris is in France.", "lang": "en", "extra": [1, 2]},
    )
    assert response.status_code == 200
    assert [e["text"] for e in response.json()["entities"]] == ["Paris", "France"]
