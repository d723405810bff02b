"""Nothing billed is lost: a failed usage write answers 503 and bills nothing; a Redis that lost
its counters is seeded from the ledger, so the monthly quota stays exact."""

from sqlalchemy import text
from sqlmodel import Session, col, select

from saas.accounts import service as accounts
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.keys import service as keys
from saas.kit.db import make_engine
from saas.kit.migrations import upgrade
from saas.usage.models import UsageEvent
from tests.support.apps import dedicated_client
from tests.support.customers import TEST_ACTOR
from tests.support.metrics import metric
from tests.support.nlp import MODEL
from tests.support.polling import eventually
from tests.support.problems import assert_problem

ENTITIES = f"/v1/{MODEL}/entities"
BODY = {"text": "Paris is in France."}


def test_failed_usage_write_answers_503_and_bills_nothing(settings, tmp_path):
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        accounts.create_plan(
            session=session,
            data=PlanCreate(name="q", rate_limit="100/minute", monthly_quota=4),
            actor=TEST_ACTOR,
            known_models=settings.models,
        )
        account = accounts.create_account(
            session=session,
            data=AccountCreate(name="a", email="a@b.c", plan="q"),
            actor=TEST_ACTOR,
        )
        assert account.id is not None
        _, key = keys.create_key(session=session, account_id=account.id, actor=TEST_ACTOR)
        session.commit()
    with dedicated_client(settings, database_url=url, redis_url=None) as client:
        with engine.begin() as connection:  # the ledger becomes unwritable
            connection.execute(text("ALTER TABLE usage_events RENAME TO usage_events_gone"))
        headers = {"X-API-Key": key}
        three = {"texts": ["Paris.", "Rome.", "Oslo."]}
        errors = metric(client, "saas_database_errors_total", component="usage")
        dropped = metric(client, "saas_usage_events_dropped_total")
        response = client.post(ENTITIES, headers=headers, json=BODY)
        assert response.headers["retry-after"] == "1"
        body = assert_problem(response, "usage_unavailable", retry_after=1)
        assert "nothing was billed" in body["detail"]
        assert client.post(f"{ENTITIES}/batch", headers=headers, json=three).status_code == 503
        assert metric(client, "saas_database_errors_total", component="usage") - errors == 2
        # A listing's event is queued without holding its answer back: lost, and counted.
        assert client.get("/v1/models", headers=headers).status_code == 200
        assert eventually(lambda: metric(client, "saas_usage_events_dropped_total") > dropped)
        assert metric(client, "saas_usage_events_dropped_total") - dropped == 1
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE usage_events_gone RENAME TO usage_events"))
        # Every reservation was given back, 1 unit and 3: the 4 the plan allows still work.
        assert client.post(f"{ENTITIES}/batch", headers=headers, json=three).status_code == 200
        assert client.post(ENTITIES, headers=headers, json=BODY).status_code == 200
        assert client.post(ENTITIES, headers=headers, json=BODY).status_code == 402
    with Session(engine) as session:
        billed = session.exec(select(UsageEvent).where(col(UsageEvent.billable).is_(True))).all()
    assert sorted(event.units for event in billed) == [1, 3]
    engine.dispose()


def test_quota_survives_a_redis_restart(settings, own_redis, make_customer):
    customer = make_customer(monthly_quota=3)
    with dedicated_client(settings, redis_url=own_redis.url, limiter_fail_open=False) as client:
        for _ in range(2):
            assert client.post(ENTITIES, headers=customer.headers, json=BODY).status_code == 200
        own_redis.stop()
        own_redis.start()  # empty: it kept nothing
        statuses = [
            client.post(ENTITIES, headers=customer.headers, json=BODY).status_code for _ in range(3)
        ]
        assert statuses == [200, 402, 402]  # seeded from the ledger: 2 used, 1 left
