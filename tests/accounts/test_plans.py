"""Plan rules the services keep for every door (admin API, CLI, bootstrap)."""

from saas.accounts import service
from tests.conftest import FRENCH, MODEL


def test_plans_naming_a_model_no_longer_served_are_found(db, make_customer):  # type: ignore[no-untyped-def]
    french = make_customer(models=[FRENCH])
    english = make_customer(models=[MODEL])
    with db() as session:
        # As if SAAS_MODELS had dropped the French model since the plan was made.
        found = service.plans_naming_unknown_models(session, known_models=[MODEL])
    assert found[french.plan_name] == [FRENCH]
    assert english.plan_name not in found
