"""A text that fails inside spaCy: in a batch it gets its own error entry and is not billed (its
quota is given back), the others are answered and billed; alone, or when every text of a batch
fails, the answer is 500 and nothing is billed.

The failure is real, not injected: spaCy refuses a text longer than `nlp.max_length` (1,000,000
characters, error E088) inside the inference process. A plan may allow longer texts, and the
app below accepts bodies that large."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from structlog.testing import CapturingLogger

from saas.config import Settings
from saas.nlp import routes
from saas.nlp.lane import TEXT_FAILED
from tests.support.apps import dedicated_client
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem
from tests.support.usage import wait_for_events

URL = f"/v1/{MODEL}"
TOO_LONG_FOR_SPACY = "word " * 200_001  # 1,000,005 characters
FAILED = {"error": {"detail": TEXT_FAILED, "code": "inference_failed"}}


@pytest.fixture(scope="module")
def big_client(settings: Settings) -> Iterator[TestClient]:
    # Both lanes: the failing text is in the long one, the others in the short one.
    with dedicated_client(
        settings, max_body_bytes=1_100_000, engine_long_text_chars=2_000
    ) as client:
        yield client


@pytest.fixture
def route_log(monkeypatch: pytest.MonkeyPatch) -> CapturingLogger:
    """What the routes log, kept (structlog's loggers cache where they write on first use, so
    the test cannot read them from stderr)."""
    captured = CapturingLogger()
    monkeypatch.setattr(routes, "log", captured)
    return captured


def logged_failure(log: CapturingLogger, request_id: str) -> dict[str, object]:
    """The fields of the one inference failure logged for `request_id`."""
    (fields,) = [
        call.kwargs
        for call in log.calls
        if call.args == ("inference_failed",) and call.kwargs["request_id"] == request_id
    ]
    return fields


def test_a_failing_text_gets_its_own_entry_and_is_not_billed(
    big_client, make_customer, db, route_log
):
    customer = make_customer(monthly_quota=4, max_text_chars=1_100_000)
    texts = ["Paris is in France.", TOO_LONG_FOR_SPACY, "Angela Merkel lives in Berlin."]

    def answered(lane: str) -> float:  # texts the lane's inference process answered
        return metric(big_client, "saas_inference_batch_texts_sum", lane=lane)

    long_before, short_before = answered("long"), answered("short")
    response = big_client.post(
        f"{URL}/entities/batch", headers=customer.headers, json={"texts": texts}
    )
    assert response.status_code == 200, response.text
    # The batch was split across the lanes and put back in order.
    assert (answered("long"), answered("short")) == (long_before + 1, short_before + 2)
    results = response.json()["results"]
    assert results[1] == FAILED
    # spaCy's own reason is logged with the request id, and not sent to the client.
    failure = logged_failure(route_log, response.headers["x-request-id"])
    assert failure["index"] == 1 and "E088" in str(failure["error"])
    assert "E088" not in response.text
    singles = [
        big_client.post(f"{URL}/entities", headers=customer.headers, json={"text": text})
        for text in (texts[0], texts[2])
    ]
    assert [results[0], results[2]] == [single.json() for single in singles]

    # Billed: the two texts answered (then the two singles), not the failed one.
    events = wait_for_events(db, customer.account_id, 3)
    batch_event = next(e for e in events if e.endpoint == "entities/batch")
    assert (batch_event.status, batch_event.billable, batch_event.units) == (200, True, 2)
    assert batch_event.chars == len(texts[0]) + len(texts[2])
    usage = big_client.get("/v1/usage", headers=customer.headers).json()
    assert usage["billable_requests"] == 4 and usage["remaining_quota"] == 0
    # The quota the failed text had reserved was given back: 2 + 2 of 4 were used, not 5 of 4
    # (which would have refused the second single with 402).
    assert all(single.status_code == 200 for single in singles)
    refused = big_client.post(f"{URL}/entities", headers=customer.headers, json={"text": "Oslo."})
    assert refused.status_code == 402


def test_a_text_that_fails_alone_or_a_batch_of_failures_is_500_and_not_billed(
    big_client, make_customer, db, route_log
):
    customer = make_customer(monthly_quota=1, max_text_chars=1_100_000)
    single = big_client.post(
        f"{URL}/tokens", headers=customer.headers, json={"text": TOO_LONG_FOR_SPACY}
    )
    assert_problem(single, "inference_failed", TEXT_FAILED)
    assert "E088" in str(logged_failure(route_log, single.headers["x-request-id"])["error"])
    batch = big_client.post(
        f"{URL}/tokens/batch", headers=customer.headers, json={"texts": [TOO_LONG_FOR_SPACY]}
    )
    assert_problem(batch, "inference_failed", "No text of the batch could be processed.")
    events = wait_for_events(db, customer.account_id, 2)
    assert sorted((e.endpoint, e.status, e.billable) for e in events) == [
        ("tokens", 500, False),
        ("tokens/batch", 500, False),
    ]
    # The one unit of quota is still there.
    ok = big_client.post(f"{URL}/tokens", headers=customer.headers, json={"text": "Oslo."})
    assert ok.status_code == 200


def test_the_openapi_schema_declares_the_error_entry(client):
    schema = client.get("/openapi.json").json()
    batch = schema["components"]["schemas"]["EntitiesBatchOut"]["properties"]["results"]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in batch["items"]["anyOf"]}
    assert refs == {"EntitiesOut", "TextFailed"}
    failed = schema["components"]["schemas"]["TextFailed"]
    assert failed["required"] == ["error"]
    error = schema["components"]["schemas"]["TextError"]
    assert error["properties"]["detail"]["type"] == "string"
