"""`saas maintain`: idempotent, a no-op on SQLite, and what it did said in plain words or JSON
(the partitions themselves: tests/usage/test_partitions.py)."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from saas.idempotency import store
from saas.idempotency.models import IdempotencyRecord
from saas.kit import months
from saas.usage.partitions import AHEAD_MONTHS


def test_maintain_twice_changes_nothing_the_second_time(saas, backend):
    first = saas("maintain")
    if backend.startswith("sqlite"):
        assert first.stdout.splitlines()[0] == (
            "usage_events is one plain table here (SQLite): nothing to do"
        )
        assert json.loads(saas("maintain", "--json").stdout)["partitioned"] is False
        return
    assert "month partitions:" in first.stdout
    this_month = months.start(datetime.now(UTC).date())
    report = json.loads(saas("maintain", "--json").stdout)
    assert report["partitioned"] is True
    assert (report["created"], report["moved"], report["dropped"]) == ([], {}, [])
    wanted = [f"{months.add(this_month, n):%Y-%m}" for n in range(AHEAD_MONTHS + 1)]
    assert set(wanted) <= set(report["months"])
    # The default retention, 13 months: raw events kept from 13 months before this one.
    assert report["raw_events_kept_from"] == f"{months.add(this_month, -13):%Y-%m}"


def test_maintain_refuses_a_negative_ahead(saas):
    result = saas("maintain", "--ahead", "-1", ok=False)
    assert result.returncode == 2


def test_maintain_deletes_expired_idempotency_keys(saas, db, customer):
    engine = db().get_bind()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    keys = {"expired": yesterday, "running": datetime.now(UTC)}
    for key, now in keys.items():
        found = store.claim(
            engine,
            account_id=customer.account_id,
            key=key,
            fingerprint="f",
            request_id=uuid.uuid4().hex,
            now=now,
            lease=timedelta(minutes=10),
        )
        assert found is None
    report = json.loads(saas("maintain", "--json").stdout)
    assert report["idempotency_keys_deleted"] >= 1
    with db() as session:
        left = session.exec(
            select(IdempotencyRecord.key).where(IdempotencyRecord.account_id == customer.account_id)
        ).all()
    assert left == ["running"]
    assert re.search(r"^idempotency keys: \d+ expired deleted$", saas("maintain").stdout, re.M)
