"""Every error of DESIGN §2 this service can produce: problem details with the right code and
status, the detail naming what is wrong, no 500. Every code: tests/test_problems.py."""

import pytest

from tests.support.marks import SQLITE_ONLY
from tests.support.nlp import MODEL
from tests.support.problems import ANY, assert_problem

# What these check does not depend on the database: run once, on the embedded default.
pytestmark = SQLITE_ONLY

ENTITIES = f"/v1/{MODEL}/entities"


def assert_error(response, code, fragment="", **fields):
    body = assert_problem(response, code, **fields)
    assert fragment in body["detail"]
    return body


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_400(client, customer, text):
    assert_error(
        client.post(ENTITIES, headers=customer.headers, json={"text": text}), "empty_text", "empty"
    )


def test_unpaired_surrogate_is_400(client, customer):
    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": "application/json"},
        content=b'{"text": "bad \\ud800 text"}',
    )
    assert_error(response, "invalid_text", "Unicode")


def test_each_endpoint_validates_text(client, customer):
    for path in ["tokens", "dependencies", "sentence-dependencies"]:
        response = client.post(f"/v1/{MODEL}/{path}", headers=customer.headers, json={"text": ""})
        assert_error(response, "empty_text")
    response = client.post("/v1/extractions", headers=customer.headers, json={"sentence": " "})
    assert_error(response, "empty_text", "sentence")


def test_text_over_plan_limit_is_413(client, make_customer):
    small = make_customer(max_text_chars=20)
    ok = client.post(ENTITIES, headers=small.headers, json={"text": "é" * 20})
    assert ok.status_code == 200  # the limit counts characters, not bytes
    assert_error(
        client.post(ENTITIES, headers=small.headers, json={"text": "x" * 21}),
        "text_too_long",
        "20",
        limit=20,
    )


def test_body_over_max_bytes_is_413(client, customer, settings):
    huge = {"text": "a" * (settings.max_body_bytes + 10)}
    response = client.post(ENTITIES, headers=customer.headers, json=huge)
    assert_error(response, "body_too_large", "bytes", limit=settings.max_body_bytes)


def test_chunked_body_over_max_bytes_is_413(client, customer, settings):
    def chunks():
        yield b'{"text": "'
        for _ in range(settings.max_body_bytes // 10_000 + 2):
            yield b"a" * 10_000
        yield b'"}'

    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert_error(response, "body_too_large", "bytes", limit=settings.max_body_bytes)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_body_is_415(client, customer, content_type):
    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": content_type},
        content=b'{"text": "Paris"}',
    )
    assert_error(response, "unsupported_media_type", "application/json")


def test_json_content_type_with_charset_is_fine(client, customer):
    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": "application/json; charset=utf-8"},
        content=b'{"text": "Paris"}',
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b'{"text": ', b"not json", b'{"text": "a"', b"\xff\xfe"],
    ids=["truncated", "garbage", "unclosed", "binary"],
)
def test_malformed_json_is_422(client, customer, body):
    response = client.post(
        ENTITIES, headers={**customer.headers, "Content-Type": "application/json"}, content=body
    )
    assert_error(response, "invalid_json")


@pytest.mark.parametrize(
    "payload",
    [{"text": 5}, {"text": None}, {"text": ["a"]}, {}, {"texts": "a"}, ["text"], "text", 3],
)
def test_wrong_types_are_422(client, customer, payload):
    assert_error(
        client.post(ENTITIES, headers=customer.headers, json=payload),
        "validation_failed",
        errors=ANY,
    )


def test_searched_entity_of_wrong_type_is_422(client, customer):
    response = client.post(
        ENTITIES, headers=customer.headers, json={"text": "Paris", "searched_entity": 3}
    )
    body = assert_error(response, "validation_failed", "searched_entity", errors=ANY)
    assert [error["loc"] for error in body["errors"]] == [["body", "searched_entity"]]


def test_unknown_model_is_404_even_with_a_bad_body(client, customer):
    for body in [{"text": "Paris"}, {"text": 5}]:
        response = client.post("/v1/xx_unknown/entities", headers=customer.headers, json=body)
        assert_error(response, "model_not_found", "xx_unknown")
    assert_error(client.get("/v1/xx_unknown/versions", headers=customer.headers), "model_not_found")


def test_unknown_route_is_404(client, customer):
    assert_error(client.get("/v1/nothing/here/at/all", headers=customer.headers), "not_found")
    assert_error(client.get("/no-such-page"), "not_found")


def test_wrong_method_is_405(client, customer):
    assert_error(client.get(ENTITIES, headers=customer.headers), "method_not_allowed")
    assert_error(
        client.put("/v1/extractions", headers=customer.headers, json={}), "method_not_allowed"
    )


def test_model_not_in_plan_is_403(client, make_customer):
    restricted = make_customer(models=["fr_core_news_sm"])
    response = client.post(ENTITIES, headers=restricted.headers, json={"text": "Paris"})
    assert_error(response, "model_not_in_plan", MODEL)
    response = client.post(
        "/v1/extractions", headers=restricted.headers, json={"sentence": "Paris"}
    )
    assert_error(response, "model_not_in_plan", MODEL)
