"""/metrics (saas/kit/metrics.py): Prometheus text that parses, counts that match the requests made,
labels by route template with nothing of a customer in them. The app under test is this
process's (its default registry); tests/e2e/test_observability.py covers several workers."""

import uuid

from fastapi.routing import iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families

from saas.auth import key_format
from tests.support.metrics import metric
from tests.support.nlp import MODEL

ENTITIES = "/v1/{model}/entities"
OUR_FAMILIES = {
    "saas_http_requests",
    "saas_http_request_duration_seconds",
    "saas_inference_batch_texts",
    "saas_inference_batch_seconds",
    "saas_inference_queue_texts",
    "saas_admission",
    "saas_redis_errors",
    "saas_database_errors",
    "saas_usage_events_queued",
    "saas_usage_events_dropped",
    "saas_usage_commit_seconds",
    "saas_key_cache_lookups",
}


def requests(client, route, status, method="POST"):
    return metric(
        client, "saas_http_requests_total", route=route, method=method, status=str(status)
    )


def test_metrics_parse_and_need_no_key(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert families >= OUR_FAMILIES
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_requests_are_counted_by_route_template(client, customer):
    before = {
        "ok": requests(client, ENTITIES, 200),
        "no_key": requests(client, ENTITIES, 401),
        "unrouted": requests(client, "unrouted", 404, "GET"),
        "admin": requests(client, "/admin/plans", 401, "GET"),
        "latency": metric(client, "saas_http_request_duration_seconds_count", route=ENTITIES),
    }
    for _ in range(3):
        answer = client.post(
            f"/v1/{MODEL}/entities", headers=customer.headers, json={"text": "Hi."}
        )
        assert answer.status_code == 200
    assert client.post(f"/v1/{MODEL}/entities", json={"text": "Hi."}).status_code == 401
    assert client.get(f"/v1/{MODEL}/nothing-here", headers=customer.headers).status_code == 404
    assert client.get("/nothing-here").status_code == 404
    # Refused before any route ran: still labelled with the route it asked for.
    assert client.get("/admin/plans").status_code == 401

    assert requests(client, ENTITIES, 200) - before["ok"] == 3
    assert requests(client, ENTITIES, 401) - before["no_key"] == 1
    assert requests(client, "unrouted", 404, "GET") - before["unrouted"] == 2
    assert requests(client, "/admin/plans", 401, "GET") - before["admin"] == 1
    latency = metric(client, "saas_http_request_duration_seconds_count", route=ENTITIES)
    assert latency - before["latency"] == 4


def test_no_label_carries_a_key_an_account_a_text_or_a_typed_model(client, make_customer):
    customer = make_customer()
    secret_text = f"Quixotic{uuid.uuid4().hex} visited Paris."
    typed_model = f"model{uuid.uuid4().hex[:12]}"
    unknown_key = key_format.generate_key()
    headers = customer.headers
    assert client.post(
        f"/v1/{MODEL}/entities", headers=headers, json={"text": secret_text}
    ).is_success
    client.post(f"/v1/{MODEL}/entities/batch", headers=headers, json={"texts": [secret_text]})
    client.post(f"/v1/{typed_model}/entities", headers=headers, json={"text": secret_text})
    client.post(f"/v1/{MODEL}/{typed_model}", headers=headers, json={"text": secret_text})
    client.post(f"/v1/{MODEL}/entities", headers={"X-API-Key": unknown_key}, json={})
    client.get(f"/{customer.key}")  # a key in the path of a public 404
    client.request("PROPFIND", f"/v1/{MODEL}/entities?key={customer.key}", headers=headers)
    client.get(f"/admin/accounts/{customer.account_name}", headers=headers)

    text = client.get("/metrics").text
    forbidden = [customer.key, unknown_key, customer.account_name, secret_text, typed_model]
    forbidden += [customer.key[:16], "Quixotic"]
    templates = {route.path for route in iter_route_contexts(client.app.routes) if route.path} | {
        "unrouted"
    }
    labels = [
        (name, value)
        for family in text_string_to_metric_families(text)
        if family.name in OUR_FAMILIES
        for sample in family.samples
        for name, value in sample.labels.items()
    ]
    assert labels
    for name, value in labels:
        assert not any(secret in value for secret in forbidden), (name, value)
        # (Other tests' apps in this process add probe routes of their own elsewhere.)
        if name == "route" and value.startswith(("/v1", "/admin")):
            assert value in templates, value
        if name == "method":
            assert value in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}
    assert requests(client, ENTITIES, 405, "OTHER") >= 1  # PROPFIND


def test_admission_outcomes(client, make_customer):
    limited = make_customer(rate_limit="2/minute")
    quota = make_customer(monthly_quota=1)

    def outcomes() -> dict[str, float]:
        names = ("admitted", "rate_limited", "quota_exhausted", "fail_open", "unavailable")
        return {n: metric(client, "saas_admission_total", outcome=n) for n in names}

    before = outcomes()
    statuses = [client.get("/v1/models", headers=limited.headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # the last one from the worker's memory
    body = {"text": "Hi."}
    statuses = [
        client.post(f"/v1/{MODEL}/entities", headers=quota.headers, json=body).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 402]
    after = outcomes()
    delta = {name: after[name] - before[name] for name in after}
    assert delta == {
        "admitted": 3,
        "rate_limited": 2,
        "quota_exhausted": 1,
        "fail_open": 0,
        "unavailable": 0,
    }


def test_key_cache_hits_and_misses(client, customer):
    def lookups() -> tuple[float, float]:
        hit = metric(client, "saas_key_cache_lookups_total", result="hit")
        return hit, metric(client, "saas_key_cache_lookups_total", result="miss")

    unknown = {"X-API-Key": key_format.generate_key()}
    hit, miss = lookups()
    assert client.get("/v1/models", headers=customer.headers).status_code == 200  # a new key
    assert lookups() == (hit, miss + 1)
    assert client.get("/v1/models", headers=customer.headers).status_code == 200
    assert lookups() == (hit + 1, miss + 1)
    assert client.get("/v1/models", headers=unknown).status_code == 401
    assert client.get("/v1/models", headers=unknown).status_code == 401  # a cached miss
    assert lookups() == (hit + 2, miss + 2)


def test_inference_batches_and_queue(client, customer):
    def batches() -> tuple[float, float, float]:
        return (
            metric(client, "saas_inference_batch_texts_count"),
            metric(client, "saas_inference_batch_texts_sum"),
            metric(client, "saas_inference_batch_seconds_count"),
        )

    count, texts, timed = batches()
    three = {"texts": ["Paris.", "Rome is old.", "Oslo."]}
    response = client.post(f"/v1/{MODEL}/tokens/batch", headers=customer.headers, json=three)
    assert response.status_code == 200
    new_count, new_texts, new_timed = batches()
    assert new_texts - texts == 3
    assert 1 <= new_count - count <= 3
    assert new_timed - timed == new_count - count  # each batch comes with its inference time
    assert metric(client, "saas_inference_batch_seconds_sum") > 0
    assert metric(client, "saas_inference_queue_texts") == 0  # nothing waits any more


def test_usage_events_and_commits(client, customer):
    queued = metric(client, "saas_usage_events_queued_total")
    commits = metric(client, "saas_usage_commit_seconds_count")
    response = client.post(f"/v1/{MODEL}/entities", headers=customer.headers, json={"text": "Hi."})
    assert response.status_code == 200  # billable: answered once its event is committed
    assert metric(client, "saas_usage_events_queued_total") - queued == 1
    assert metric(client, "saas_usage_commit_seconds_count") - commits >= 1
