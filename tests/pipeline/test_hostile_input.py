"""Hostile request bodies whose answer does not depend on the transport (in-process): each gets
its documented status as problem details, quickly, and the next normal request still works.
Transport-level ones (10 MB bodies, slow bodies and headers, huge headers, idle connections)
and JSON nested 100,000 deep (how deep the parser goes depends on the serving thread's stack):
tests/e2e/test_hostile_input.py."""

import time

import pytest

from saas.problems.responses import UNPARSABLE_BODY
from tests.support.marks import SQLITE_ONLY
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem

# Nothing here depends on the database: run once, on the embedded default.
pytestmark = SQLITE_ONLY

ENTITIES = f"/v1/{MODEL}/entities"
TOKENS = f"/v1/{MODEL}/tokens"
QUICK = 2.0  # seconds; measured well under 0.2 s


def post(client, customer, path, body, content_type="application/json"):
    started = time.monotonic()
    response = client.post(
        path, headers={**customer.headers, "Content-Type": content_type}, content=body
    )
    assert time.monotonic() - started < QUICK, f"{path} took {time.monotonic() - started:.1f} s"
    return response


def assert_error(response, code, detail=None, **fields):
    assert_problem(response, code, detail, **fields)


def assert_healthy(client, customer):
    response = client.post(ENTITIES, headers=customer.headers, json={"text": "Paris is in France."})
    assert response.status_code == 200
    assert [e["text"] for e in response.json()["entities"]] == ["Paris", "France"]


@pytest.mark.parametrize("path", [ENTITIES, ENTITIES + "/batch"])
def test_invalid_utf8_is_422(client, customer, path):
    body = b'{"text": "caf\xc3\x28 \xff", "texts": ["\xfe"]}'
    assert_error(post(client, customer, path, body), "invalid_json", UNPARSABLE_BODY)
    assert_healthy(client, customer)


def test_a_nul_byte_in_text(client, customer):
    # Escaped, it is a character like any other: annotated, offsets counted in characters.
    text = "a\x00b John Doe lives in London."
    response = post(client, customer, ENTITIES, b'{"text": "a\\u0000b John Doe lives in London."}')
    assert response.status_code == 200, response.text
    entities = response.json()["entities"]
    assert entities and all(text[e["start"] : e["end"]] == e["text"] for e in entities)
    # Raw, it is a control character JSON forbids inside a string: malformed JSON.
    raw = post(client, customer, ENTITIES, b'{"text": "a\x00b John"}')
    assert_error(raw, "invalid_json", "Request body is not valid JSON.")
    assert_healthy(client, customer)


@pytest.mark.parametrize("text", [" ", "\n\t\r ", "\u00a0\u2003\u3000"])
def test_text_of_only_whitespace_is_400(client, customer, text):
    response = client.post(ENTITIES, headers=customer.headers, json={"text": text})
    assert_error(response, "empty_text", "'text' must not be empty.")
    batch = client.post(ENTITIES + "/batch", headers=customer.headers, json={"texts": ["ok", text]})
    assert_error(batch, "empty_text", "'texts[1]' must not be empty.", texts_index=1)
    assert_healthy(client, customer)


# Offsets index the Python str (code points), as NLP Cloud's do: an emoji outside the BMP is
# one character (two UTF-16 units, four UTF-8 bytes), a combining mark is a character of its own.
UNICODE_TEXTS = [
    "👩‍👩‍👧 Angela Merkel met Emmanuel Macron in Berlin 🇩🇪🇫🇷 on Monday.",
    "Zoe\u0308 Saldana and Jose\u0301 Mourinho flew from Sa\u0303o Paulo to Zu\u0308rich.",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 Barack Obama visited Microsoft in Seattle.",
]


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_emoji_and_combining_marks_keep_offsets_right(client, customer, nlp, text):
    entities = client.post(ENTITIES, headers=customer.headers, json={"text": text}).json()
    assert entities["entities"], "the text names people and places"
    for entity in entities["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    tokens = client.post(TOKENS, headers=customer.headers, json={"text": text}).json()["tokens"]
    for token in tokens:
        assert text[token["start"] : token["end"]] == token["text"]
    assert [(t["start"], t["text"]) for t in tokens] == [(t.idx, t.text) for t in nlp(text)]


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        (
            "text/plain",
            b'{"text": "John Doe"}',
            "unsupported_media_type",
        ),  # JSON declared as something else
        ("application/x-www-form-urlencoded", b"text=John+Doe", "unsupported_media_type"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nJohn Doe\r\n--b--\r\n',
            "unsupported_media_type",
        ),
        ("application/json", b"text=John+Doe", "invalid_json"),  # a form declared as JSON
    ],
    ids=["plain-json", "form", "multipart", "json-form"],
)
def test_content_type_lies(client, customer, content_type, body, code):
    for path in (ENTITIES, ENTITIES + "/batch"):
        response = post(client, customer, path, body, content_type)
        assert_error(response, code)
    assert_healthy(client, customer)
