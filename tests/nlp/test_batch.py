"""Batch endpoints, POST /v1/{model}/{task}/batch: the single endpoint's answers in order, each
text one unit of the rate limits, quota and bill, and nothing counted for a refused batch."""

import asyncio

import pytest
from starlette.types import Message

from saas.kit import months
from saas.nlp.policy import parse
from saas.pipeline.batch_body import read_body
from saas.usage import service
from tests.support.marks import SQLITE_ONLY
from tests.support.nlp import FRENCH, MODEL
from tests.support.usage import wait_for_events

URL = f"/v1/{MODEL}"
TASKS = ["entities", "tokens", "dependencies", "sentence-dependencies"]


def batch(client, customer, texts, task="entities", **extra):
    return client.post(
        f"{URL}/{task}/batch", headers=customer.headers, json={"texts": texts, **extra}
    )


def single(client, customer, text, task="entities", **extra):
    return client.post(f"{URL}/{task}", headers=customer.headers, json={"text": text, **extra})


@SQLITE_ONLY
@pytest.mark.parametrize("task", TASKS)
def test_results_are_the_single_answers_in_order(client, customer, texts, task):
    chosen = texts[:12] if task == "entities" else texts[3:8]
    response = batch(client, customer, chosen, task)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    results = response.json()["results"]
    answers = [single(client, customer, text, task) for text in chosen]
    assert all(a.status_code == 200 for a in answers)
    assert results == [a.json() for a in answers]
    # Built from the engine's bytes, byte for byte the single answers joined.
    assert response.content == b'{"results":[' + b",".join(a.content for a in answers) + b"]}"
    # Order is the texts' order, not the order answers came back in.
    reversed_results = batch(client, customer, chosen[::-1], task).json()["results"]
    assert reversed_results == results[::-1]


@SQLITE_ONLY
def test_entities_match_spacy_and_searched_entity_applies_to_every_text(
    client, customer, nlp, texts
):
    chosen = texts[:10]
    results = batch(client, customer, chosen).json()["results"]
    for text, result in zip(chosen, results, strict=True):
        expected = [(e.start_char, e.end_char, e.label_, e.text) for e in nlp(text).ents]
        got = [(e["start"], e["end"], e["type"], e["text"]) for e in result["entities"]]
        assert got == expected, text
    filtered = batch(client, customer, chosen, searched_entity="gpe").json()["results"]
    assert filtered == [
        single(client, customer, text, searched_entity="gpe").json() for text in chosen
    ]
    assert any(r["entities"] for r in filtered)
    assert all(e["type"] == "GPE" for r in filtered for e in r["entities"])


def test_each_text_is_one_unit_of_the_rate_limit(client, make_customer):
    customer = make_customer(rate_limit="3/minute")
    first = batch(client, customer, ["Paris is in France.", "Berlin is in Germany."])
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining"] == "1"
    second = batch(client, customer, ["Rome is in Italy.", "Madrid is in Spain."])
    assert second.status_code == 429
    assert 55 <= int(second.headers["retry-after"]) <= 61  # a minute and one bucket at most
    # One text still fits: the refused batch neither counted nor blocks smaller requests.
    assert single(client, customer, "Oslo is in Norway.").status_code == 200
    last = single(client, customer, "Oslo is in Norway.")
    assert last.status_code == 429 and last.headers["x-ratelimit-remaining"] == "0"


def test_each_text_is_one_unit_of_quota_and_bill(client, make_customer, db):
    customer = make_customer(monthly_quota=5, price_cents_per_1000_requests=1000)
    texts = ["Paris is in France.", "Berlin is in Germany.", "Rome is in Italy."]
    assert batch(client, customer, texts).status_code == 200
    refused = batch(client, customer, texts)
    assert refused.status_code == 402 and "quota" in refused.json()["detail"].lower()

    events = wait_for_events(db, customer.account_id, 2)
    # A refused batch records the texts it asked for, never bills them.
    assert sorted((e.endpoint, e.status, e.billable, e.units) for e in events) == [
        ("entities/batch", 200, True, 3),
        ("entities/batch", 402, False, 3),
    ]
    ok_event = next(e for e in events if e.status == 200)
    assert ok_event.chars == sum(map(len, texts)) and ok_event.model == MODEL

    usage = client.get("/v1/usage", headers=customer.headers).json()
    assert usage["billable_requests"] == 3 and usage["remaining_quota"] == 2
    assert usage["characters"] == sum(map(len, texts))
    assert usage["plan"]["max_batch_texts"] == 32
    by_endpoint = {row["endpoint"]: row for row in usage["by_endpoint"]}
    assert by_endpoint["entities/batch"]["billable_requests"] == 3
    month = months.current()
    with db() as session:
        assert service.reconcile(session, customer.account_id, month) == {
            "events": 3,
            "rollups": 3,
            "invoice": 3,
        }
        line = next(
            i for i in service.invoices(session, month) if i["account_id"] == customer.account_id
        )
    assert line["billable_requests"] == 3 and line["metered_cents"] == 3

    # The two units left are still usable, by a batch of two.
    assert batch(client, customer, texts[:2]).status_code == 200
    assert single(client, customer, texts[0]).status_code == 402


def test_over_the_effective_maximum_is_413_and_counts_nothing(client, make_customer):
    # The rate limit's window (3) is smaller than max_batch_texts (10): it is the maximum.
    windowed = make_customer(rate_limit="3/minute", max_batch_texts=10, monthly_quota=3)
    four = ["Paris.", "Berlin.", "Rome.", "Madrid."]
    refused = batch(client, windowed, four)
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert "4 texts" in detail and "at most 3" in detail and "3/minute" in detail
    # The plan is known: the rate-limit headers say where the account stands (nothing used).
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "3"
    assert refused.headers["ratelimit"].startswith('"minute";r=3;')
    assert "retry-after" not in refused.headers  # waiting does not make it fit
    full = batch(client, windowed, four[:3])  # the whole window and quota are still there
    assert full.status_code == 200 and full.headers["x-ratelimit-remaining"] == "0"

    # max_batch_texts (2) is smaller than the window: it is the maximum.
    capped = make_customer(rate_limit="100/minute", max_batch_texts=2, monthly_quota=2)
    refused = batch(client, capped, four[:3], "tokens")
    assert refused.status_code == 413 and "max_batch_texts" in refused.json()["detail"]
    assert "at most 2" in refused.json()["detail"]
    full = batch(client, capped, four[:2], "tokens")
    assert full.status_code == 200 and full.headers["x-ratelimit-remaining"] == "98"


def test_an_invalid_text_is_named_and_uses_no_quota(client, make_customer, db):
    customer = make_customer(monthly_quota=3, max_text_chars=30)
    empty = batch(client, customer, ["Paris is in France.", "Rome.", "   "])
    assert empty.status_code == 400 and "'texts[2]'" in empty.json()["detail"]
    assert "empty" in empty.json()["detail"]
    long = batch(client, customer, ["x" * 31, "Rome."], "dependencies")
    assert long.status_code == 413 and "'texts[0]'" in long.json()["detail"]
    # The whole quota is still there.
    ok = batch(client, customer, ["Paris is in France.", "Rome.", "Oslo."])
    assert ok.status_code == 200
    events = wait_for_events(db, customer.account_id, 3)
    assert sum(e.units for e in events if e.billable) == 3
    assert {(e.status, e.billable) for e in events} == {(400, False), (413, False), (200, True)}


@pytest.mark.parametrize(
    ("content", "cost"),
    [
        (b'{"texts": ["Paris."', 1),  # malformed
        (b'{"texts": []}', 1),  # at least one text
        (b'{"texts": "Paris."}', 1),  # not a list
        (b'{"text": "Paris."}', 1),  # the single endpoint's body
        (b"[]", 1),
        (b'{"texts": [1, 2]}', 2),  # a list: counted, then refused by the route
    ],
)
def test_malformed_bodies_are_422_and_not_billed(client, make_customer, content, cost):
    customer = make_customer(rate_limit="10/minute", monthly_quota=5)
    response = client.post(
        f"{URL}/entities/batch",
        headers={**customer.headers, "Content-Type": "application/json"},
        content=content,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] in ("invalid_json", "validation_failed")
    assert response.headers["x-ratelimit-remaining"] == str(10 - cost)
    # Not billed: all five units of quota are left for a batch of five.
    five = batch(client, customer, ["Paris."] * 5)
    assert five.status_code == 200


def test_bodies_only_the_standard_library_reads_are_counted_too(client, make_customer):
    """FastAPI parses with the json module, which takes NaN where orjson does not: such a batch
    must still cost one unit per text."""
    customer = make_customer(rate_limit="3/minute")
    response = client.post(
        f"{URL}/tokens/batch",
        headers={**customer.headers, "Content-Type": "application/json"},
        content=b'{"texts": ["Paris.", "Rome."], "ignored": NaN}',
    )
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2
    assert response.headers["x-ratelimit-remaining"] == "1"


@SQLITE_ONLY
def test_model_and_content_type_rules(client, make_customer):
    english_only = make_customer(models=[MODEL])
    for task in TASKS:
        response = client.post(
            f"/v1/{FRENCH}/{task}/batch", headers=english_only.headers, json={"texts": ["Paris."]}
        )
        assert response.status_code == 403 and FRENCH in response.json()["detail"], task
    unknown = client.post(
        "/v1/no_such_model/entities/batch", headers=english_only.headers, json={"texts": ["a"]}
    )
    assert unknown.status_code == 404
    not_json = client.post(
        f"{URL}/entities/batch",
        headers={**english_only.headers, "Content-Type": "text/plain"},
        content=b'{"texts": ["Paris."]}',
    )
    assert not_json.status_code == 415
    assert client.post(f"{URL}/extractions/batch", headers=english_only.headers).status_code == 404
    assert (
        client.post(f"{URL}/entities/batch", json={"texts": ["Paris."]}).status_code == 401
    )  # no key


@SQLITE_ONLY
def test_french_batch(client, make_customer, nlp_fr, texts_fr):
    customer = make_customer(models=[FRENCH])
    chosen = texts_fr[:4]
    response = client.post(
        f"/v1/{FRENCH}/entities/batch", headers=customer.headers, json={"texts": chosen}
    )
    assert response.status_code == 200
    for text, result in zip(chosen, response.json()["results"], strict=True):
        expected = [(e.start_char, e.end_char, e.label_) for e in nlp_fr(text).ents]
        assert [(e["start"], e["end"], e["type"]) for e in result["entities"]] == expected


def test_the_model_is_refused_before_the_batch_size(client, make_customer):
    customer = make_customer(rate_limit="5/minute", max_batch_texts=2, models=[MODEL])
    too_many = {"texts": ["Paris.", "Rome.", "Oslo."]}
    unknown = client.post(
        "/v1/no_such_model/entities/batch", headers=customer.headers, json=too_many
    )
    assert unknown.status_code == 404 and "no_such_model" in unknown.json()["detail"]
    not_in_plan = client.post(f"/v1/{FRENCH}/tokens/batch", headers=customer.headers, json=too_many)
    assert not_in_plan.status_code == 403 and FRENCH in not_in_plan.json()["detail"]
    for refused in (unknown, not_in_plan):
        assert refused.headers["x-ratelimit-remaining"] == "5"  # counted nothing
    assert batch(client, customer, ["Paris.", "Rome."]).headers["x-ratelimit-remaining"] == "3"


@SQLITE_ONLY
def test_chunked_body_over_max_bytes_is_413(client, customer, settings):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(settings.max_body_bytes // 10_000 + 2):
            yield b"a" * 10_000
        yield b'"]}'

    response = client.post(
        f"{URL}/entities/batch",
        headers={**customer.headers, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413 and "bytes" in response.json()["detail"]
    assert response.headers["x-ratelimit-limit"]  # read after authentication: the plan is known


@SQLITE_ONLY
def test_batch_endpoints_are_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    for task, answer in [
        ("entities", "EntitiesBatchOut"),
        ("tokens", "TokensBatchOut"),
        ("dependencies", "DependenciesBatchOut"),
        ("sentence-dependencies", "SentenceDependenciesBatchOut"),
    ]:
        post = paths[f"/v1/{{model}}/{task}/batch"]["post"]
        schema = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{answer}"}
        assert {"400", "402", "413", "422", "429"} <= set(post["responses"])


def test_the_policy_reads_a_body_as_the_route_does():
    """The model policy prices a batch from the body as the route's parser takes it: orjson,
    then the standard library for what orjson refuses (lone surrogates, UTF-16)."""
    assert parse(b'{"texts": ["a", "b", "c"]}') == {"texts": ["a", "b", "c"]}
    assert len(parse(b'{"texts": ["\\ud800", "b"]}')["texts"]) == 2  # lone surrogate
    assert parse('{"texts": ["a", "b"]}'.encode("utf-16")) == {"texts": ["a", "b"]}
    for body in [b"", b"{", b"[" * 100_000]:
        assert parse(body) is None, body[:10]


def test_read_body_replays_every_chunk_then_the_server():
    async def scenario() -> tuple[bytes, list[Message]]:
        incoming = [
            {"type": "http.request", "body": b'{"texts": ', "more_body": True},
            {"type": "http.request", "body": b'["a"]}', "more_body": False},
            {"type": "http.disconnect"},
        ]

        async def receive():
            return incoming.pop(0)

        body, replay = await read_body(receive)
        return body, [await replay(), await replay()]

    body, replayed = asyncio.run(scenario())
    assert body == b'{"texts": ["a"]}'
    assert replayed == [
        {"type": "http.request", "body": b'{"texts": ["a"]}', "more_body": False},
        {"type": "http.disconnect"},
    ]
