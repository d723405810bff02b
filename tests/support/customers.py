"""Customers made directly through the services, as the admin API would make them."""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from saas.accounts import service as accounts
from saas.accounts.models import AccountStatus
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.auth.principal import Actor
from saas.keys import service as keys


@dataclass
class Customer:
    key: str
    key_id: int
    account_id: int
    account_name: str
    plan_name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.key}"}


TEST_ACTOR = Actor(via="system", name="tests")


def new_customer(
    db: Callable[[], Session],
    known_models: Mapping[str, str],
    *,
    scopes: tuple[str, ...] = (),
    expires_at: datetime | None = None,
    status: str = AccountStatus.active,
    **plan_fields: object,
) -> Customer:
    """A new plan, account and key in the database `db` opens sessions on."""
    suffix = uuid.uuid4().hex[:10]
    with db() as session:
        plan = accounts.create_plan(
            session=session,
            data=PlanCreate.model_validate(
                {"name": f"plan-{suffix}", "rate_limit": "1000/second", **plan_fields}
            ),
            actor=TEST_ACTOR,
            known_models=known_models,
        )
        account = accounts.create_account(
            session=session,
            data=AccountCreate(
                name=f"acct-{suffix}", email=f"{suffix}@example.com", plan=plan.name
            ),
            actor=TEST_ACTOR,
        )
        account.status = status
        assert account.id is not None
        key, plaintext = keys.create_key(
            session=session,
            account_id=account.id,
            actor=TEST_ACTOR,
            name="test",
            scopes=scopes,
            expires_at=expires_at,
        )
        assert key.id is not None
        customer = Customer(plaintext, key.id, account.id, account.name, plan.name)
        session.commit()
    return customer
