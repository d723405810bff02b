"""Redis stopped under a running service: fail open falls back to this worker's own limits, fail
closed answers 503; neither answers 500 or hangs. Uses a Redis of the test's own."""

import time

from saas.ratelimit.admission import REDIS_RETRY_SECONDS
from tests.support.apps import dedicated_client, services
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_fail_open_falls_back_to_local_limits(settings, own_redis, make_customer):
    customer = make_customer(rate_limit="3/minute")
    with dedicated_client(settings, redis_url=own_redis.url, limiter_fail_open=True) as client:
        assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
        own_redis.stop()
        fail_open = metric(client, "saas_admission_total", outcome="fail_open")
        redis_errors = metric(client, "saas_redis_errors_total", component="limiter")
        results = [
            timed(lambda: client.post(ENTITIES, headers=customer.headers, json=BODY))
            for _ in range(4)
        ]
        # This worker now counts alone (it has not seen the request Redis admitted).
        assert [r.status_code for r, _ in results] == [200, 200, 200, 429]
        assert all(seconds < 2 for _, seconds in results)
        assert metric(client, "saas_admission_total", outcome="fail_open") - fail_open == 3
        assert metric(client, "saas_redis_errors_total", component="limiter") > redis_errors
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")

        own_redis.start()  # an empty Redis: the shared count starts again
        admission = services(client).admission
        real_clock = admission.monotonic
        # The limiter retries Redis after a pause: move its clock past it instead of waiting.
        admission.monotonic = lambda: real_clock() + REDIS_RETRY_SECONDS
        other = make_customer(rate_limit="1/minute")
        fail_open = metric(client, "saas_admission_total", outcome="fail_open")
        statuses = [
            client.post(ENTITIES, headers=other.headers, json=BODY).status_code for _ in range(2)
        ]
        # Both decided by Redis: a first admitted by this worker's own limiter would show in
        # the metric, and that limiter, not having counted the first, would admit the second.
        assert statuses == [200, 429]
        assert metric(client, "saas_admission_total", outcome="fail_open") == fail_open


def test_fail_closed_answers_503(settings, own_redis, make_customer):
    customer = make_customer(rate_limit="100/minute")
    with dedicated_client(settings, redis_url=own_redis.url, limiter_fail_open=False) as client:
        assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
        own_redis.stop()
        unavailable = metric(client, "saas_admission_total", outcome="unavailable")
        for _ in range(3):
            response, seconds = timed(
                lambda: client.post(ENTITIES, headers=customer.headers, json=BODY)
            )
            assert response.headers["retry-after"] == "1"
            detail = "Rate limiting is temporarily unavailable; retry shortly."
            assert_problem(response, "limiter_unavailable", detail, retry_after=1)
            assert seconds < 2
        assert metric(client, "saas_admission_total", outcome="unavailable") - unavailable == 3
        # Authentication and public routes do not depend on Redis.
        assert client.get(f"/v1/{MODEL}/entities").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_rejections_are_answered_locally_without_redis(settings, own_redis, make_customer):
    customer = make_customer(rate_limit="1/minute")
    with dedicated_client(settings, redis_url=own_redis.url, limiter_fail_open=False) as client:
        assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
        assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 429
        own_redis.stop()
        # Fail-closed would say 503 if Redis were asked: the local "blocked until" answers.
        again = client.post(ENTITIES, headers=customer.headers, json=BODY)
        assert again.status_code == 429
        assert 50 <= int(again.headers["retry-after"]) <= 61  # a minute and one bucket at most
        assert again.headers["x-ratelimit-remaining"] == "0"
