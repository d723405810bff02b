"""Every error of DESIGN §2 this service can produce: JSON {"detail": str}, right status, no 500."""

import pytest

from tests.conftest import MODEL, SQLITE_ONLY

# What these check does not depend on the database: run once, on the embedded default.
pytestmark = SQLITE_ONLY

ENTITIES = f"/v1/{MODEL}/entities"


def assert_error(response, status, fragment=""):  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert fragment in body["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_400(client, customer, text):  # type: ignore[no-untyped-def]
    assert_error(client.post(ENTITIES, headers=customer.headers, json={"text": text}), 400, "empty")


def test_unpaired_surrogate_is_400(client, customer):  # type: ignore[no-untyped-def]
    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": "application/json"},
        content=b'{"text": "bad \\ud800 text"}',
    )
    assert_error(response, 400, "Unicode")


def test_each_endpoint_validates_text(client, customer):  # type: ignore[no-untyped-def]
    for path in ["tokens", "dependencies", "sentence-dependencies"]:
        response = client.post(f"/v1/{MODEL}/{path}", headers=customer.headers, json={"text": ""})
        assert_error(response, 400)
    response = client.post("/v1/extractions", headers=customer.headers, json={"sentence": " "})
    assert_error(response, 400, "sentence")


def test_text_over_plan_limit_is_413(client, make_customer):  # type: ignore[no-untyped-def]
    small = make_customer(max_text_chars=20)
    ok = client.post(ENTITIES, headers=small.headers, json={"text": "é" * 20})
    assert ok.status_code == 200  # the limit counts characters, not bytes
    assert_error(client.post(ENTITIES, headers=small.headers, json={"text": "x" * 21}), 413, "20")


def test_body_over_max_bytes_is_413(client, customer, settings):  # type: ignore[no-untyped-def]
    huge = {"text": "a" * (settings.max_body_bytes + 10)}
    assert_error(client.post(ENTITIES, headers=customer.headers, json=huge), 413, "bytes")


def test_chunked_body_over_max_bytes_is_413(client, customer, settings):  # type: ignore[no-untyped-def]
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"text": "'
        for _ in range(settings.max_body_bytes // 10_000 + 2):
            yield b"a" * 10_000
        yield b'"}'

    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert_error(response, 413, "bytes")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_body_is_415(client, customer, content_type):  # type: ignore[no-untyped-def]
    response = client.post(
        ENTITIES,
        headers={**customer.headers, "Content-Type": content_type},
        content=b'{"text": "Paris"}',
    )
    assert_error(response, 415, "application/json")


def test_json_content_type_with_charset_is_fine(client, customer):  # type: ignore[no-untyped-def]
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
def test_malformed_json_is_422(client, customer, body):  # type: ignore[no-untyped-def]
    response = client.post(
        ENTITIES, headers={**customer.headers, "Content-Type": "application/json"}, content=body
    )
    assert_error(response, 422)


@pytest.mark.parametrize(
    "payload",
    [{"text": 5}, {"text": None}, {"text": ["a"]}, {}, {"texts": "a"}, ["text"], "text", 3],
)
def test_wrong_types_are_422(client, customer, payload):  # type: ignore[no-untyped-def]
    assert_error(client.post(ENTITIES, headers=customer.headers, json=payload), 422)


def test_searched_entity_of_wrong_type_is_422(client, customer):  # type: ignore[no-untyped-def]
    response = client.post(
        ENTITIES, headers=customer.headers, json={"text": "Paris", "searched_entity": 3}
    )
    assert_error(response, 422, "searched_entity")


def test_unknown_model_is_404_even_with_a_bad_body(client, customer):  # type: ignore[no-untyped-def]
    for body in [{"text": "Paris"}, {"text": 5}]:
        response = client.post("/v1/xx_unknown/entities", headers=customer.headers, json=body)
        assert_error(response, 404, "xx_unknown")
    assert_error(client.get("/v1/xx_unknown/versions", headers=customer.headers), 404)


def test_unknown_route_is_404(client, customer):  # type: ignore[no-untyped-def]
    assert_error(client.get("/v1/nothing/here/at/all", headers=customer.headers), 404)
    assert_error(client.get("/no-such-page"), 404)


def test_wrong_method_is_405(client, customer):  # type: ignore[no-untyped-def]
    assert_error(client.get(ENTITIES, headers=customer.headers), 405)
    assert_error(client.put("/v1/extractions", headers=customer.headers, json={}), 405)


def test_model_not_in_plan_is_403(client, make_customer):  # type: ignore[no-untyped-def]
    restricted = make_customer(models=["fr_core_news_sm"])
    response = client.post(ENTITIES, headers=restricted.headers, json={"text": "Paris"})
    assert_error(response, 403, MODEL)
    response = client.post(
        "/v1/extractions", headers=restricted.headers, json={"sentence": "Paris"}
    )
    assert_error(response, 403, MODEL)
