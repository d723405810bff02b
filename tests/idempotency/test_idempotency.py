"""Idempotency-Key through the app (both databases): replays, mismatches, errors not kept,
duplicates in flight at once in one worker."""

import threading
import uuid

from sqlmodel import col, func, select

from saas.usage.models import UsageEvent
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Angela Merkel met Emmanuel Macron in Berlin."}


def billed(db, account_id: int) -> int:
    with db() as session:
        return (
            session.exec(
                select(func.sum(UsageEvent.units)).where(
                    UsageEvent.account_id == account_id, col(UsageEvent.billable).is_(True)
                )
            ).one()
            or 0
        )


def with_key(customer, key: str) -> dict[str, str]:
    return {**customer.headers, "Idempotency-Key": key}


def test_retry_gets_the_stored_answer_and_is_billed_once(client, customer, db):
    headers = with_key(customer, uuid.uuid4().hex)
    first = client.post(ENTITIES, headers=headers, json=BODY)
    again = client.post(ENTITIES, headers=headers, json=BODY)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert billed(db, customer.account_id) == 1


def test_batch_is_replayed_and_billed_once_per_text(client, customer, db):
    headers = with_key(customer, "batch-1")
    body = {"texts": ["Paris is in France.", "John works at Google."]}
    answers = [client.post(f"{ENTITIES}/batch", headers=headers, json=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert {a.content for a in answers} == {answers[0].content}
    assert [a.headers.get("idempotent-replayed") for a in answers] == [None, "true", "true"]
    assert billed(db, customer.account_id) == 2


def test_same_key_for_another_request_is_422(client, make_customer, db):
    customer = make_customer()
    headers = with_key(customer, "order-42")
    assert client.post(ENTITIES, headers=headers, json=BODY).status_code == 200
    for path, body in [
        (ENTITIES, {"text": "Another text."}),
        (f"/v1/{MODEL}/tokens", BODY),
        ("/v1/fr_core_news_sm/entities", BODY),
    ]:
        refused = client.post(path, headers=headers, json=body)
        assert refused.status_code == 422, (path, refused.text)
        assert "already used with another request" in refused.json()["detail"]
    # Keys belong to an account: another account's same key is a new request.
    other = make_customer()
    fresh = client.post(ENTITIES, headers=with_key(other, "order-42"), json=BODY)
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert billed(db, customer.account_id) == 1


def test_an_error_is_not_kept_and_frees_the_key(client, customer, db):
    headers = with_key(customer, "fix-and-retry")
    for _ in range(2):  # each try runs again: nothing stored, nothing replayed
        empty = client.post(ENTITIES, headers=headers, json={"text": ""})
        assert empty.status_code == 400 and "idempotent-replayed" not in empty.headers
    fixed = client.post(ENTITIES, headers=headers, json=BODY)
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers
    assert billed(db, customer.account_id) == 1


def test_invalid_keys_are_400_and_key_creation_ignores_the_header(client, customer):
    for key in ["", "x" * 256, "tab\tinside"]:
        answer = client.post(ENTITIES, headers=with_key(customer, key), json=BODY)
        assert answer.status_code == 400, key
        detail = "Idempotency-Key must be 1 to 255 printable ASCII characters."
        assert_problem(answer, "invalid_idempotency_key", detail)
    longest = client.post(ENTITIES, headers=with_key(customer, "x" * 255), json=BODY)
    assert longest.status_code == 200
    refused = client.post(ENTITIES, headers=with_key(customer, ""), json=BODY)
    assert refused.headers["x-ratelimit-limit"]  # an authenticated answer: its plan's headers
    # POST /v1/keys ignores the header: a key is shown once and never stored for a replay.
    made = [
        client.post("/v1/keys", headers=with_key(customer, "new-key"), json={"name": "k"})
        for _ in range(2)
    ]
    assert [answer.status_code for answer in made] == [201, 201]
    assert made[0].json()["key"] != made[1].json()["key"]
    assert "idempotent-replayed" not in made[1].headers


def test_concurrent_duplicates_wait_for_the_first(client, customer, db):
    headers = with_key(customer, "burst")
    answers = []
    lock = threading.Lock()

    def post() -> None:
        answer = client.post(ENTITIES, headers=headers, json=BODY)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [200] * 8
    assert {a.content for a in answers} == {answers[0].content}
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == [""] + ["true"] * 7
    assert billed(db, customer.account_id) == 1


def test_the_header_is_declared_on_every_nlp_post(client):
    paths = client.get("/openapi.json").json()["paths"]
    posts = {path: item["post"] for path, item in paths.items() if "post" in item}
    nlp = [path for path in posts if path.startswith("/v1/") and path != "/v1/keys"]
    assert len(nlp) == 9
    for path in nlp:
        headers = [p for p in posts[path]["parameters"] if p["in"] == "header"]
        assert [p["name"] for p in headers] == ["Idempotency-Key"], path


def test_a_replay_uses_no_quota(client, make_customer, db):
    customer = make_customer(monthly_quota=1)
    headers = with_key(customer, "quota")
    answers = [client.post(ENTITIES, headers=headers, json=BODY) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.headers.get("idempotent-replayed") for a in answers] == [None] + ["true"] * 3
    # The one request that ran used the month's only unit.
    assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 402
    assert billed(db, customer.account_id) == 1


def test_a_replay_is_one_request_of_the_rate_limit(client, make_customer, db):
    """A replay reads the database: a client may not repeat it without bound."""
    customer = make_customer(rate_limit="3/minute")
    headers = with_key(customer, "limited")
    answers = [client.post(ENTITIES, headers=headers, json=BODY) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers.get("x-ratelimit-remaining") for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].json() == answers[2].json()
    assert int(answers[3].headers["retry-after"]) >= 1
    assert billed(db, customer.account_id) == 1
