"""Plan rules the services keep for every door (admin API, CLI, bootstrap)."""

from saas.accounts import service
from tests.support.nlp import FRENCH, MODEL


def test_plans_naming_a_model_no_longer_served_are_found(db, make_customer):
    french = make_customer(models=[FRENCH])
    english = make_customer(models=[MODEL])
    with db() as session:
        # As if SAAS_MODELS had dropped the French model since the plan was made.
        found = service.plans_naming_unknown_models(session, known_models=[MODEL])
    assert found[french.plan_name] == [FRENCH]
    assert english.plan_name not in found


def test_a_plan_gets_a_well_formed_name_and_distinct_windows(client, make_customer):
    operator = make_customer(scopes=("admin",))
    refused = {
        "Pro Plan": "1000/minute",  # goes into URLs and CLI arguments as it is
        "dup-windows": "10/minute;20/60 seconds",  # one counter per window length
        "junk-limit": "lots",
    }
    for name, rate_limit in refused.items():
        answer = client.post(
            "/admin/plans", json={"name": name, "rate_limit": rate_limit}, headers=operator.headers
        )
        assert answer.status_code == 422, (name, answer.text)
    plan = make_customer().plan_name
    for rate_limit in ("10/minute;20/60 seconds", "lots"):  # an update is checked the same way
        answer = client.patch(
            f"/admin/plans/{plan}", json={"rate_limit": rate_limit}, headers=operator.headers
        )
        assert answer.status_code == 422, answer.text
    ok = client.patch(
        f"/admin/plans/{plan}", json={"rate_limit": "5/second;100/minute"}, headers=operator.headers
    )
    assert ok.status_code == 200
