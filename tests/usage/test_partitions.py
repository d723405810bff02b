"""The ledger on PostgreSQL: partitioned by month without losing a row (and back), old months
dropped whole while their rollups and invoices stay, and an event no month takes still stored.
Each test has a private schema: they make and drop partitions."""

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from alembic import command
from saas.accounts import service as accounts
from saas.accounts.schemas import AccountCreate, PlanCreate
from saas.app import make_ledger_partitions
from saas.kit import months
from saas.kit.db import make_engine
from saas.kit.migrations import alembic_config, upgrade
from saas.usage import partitions
from saas.usage.ledger import Event, write_events
from saas.usage.partitions import partition_name
from saas.usage.service import invoices, reconcile
from tests.support.customers import TEST_ACTOR
from tests.support.nlp import ENGLISH_ONLY
from tests.support.polling import eventually
from tests.support.stores import postgres_schema_url, postgres_url

TODAY = datetime.now(UTC).date()
THIS_MONTH = months.start(TODAY)
# Sessions of these tests run 14 hours ahead of UTC: month bounds must still be UTC months.
FAR_EAST = "%20-cTimeZone%3DPacific/Kiritimati"


@pytest.fixture
def schema_url() -> Iterator[str]:
    schema = f"ledger_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_schema_url(schema) + FAR_EAST
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(schema_url: str) -> Iterator[Engine]:
    engine = make_engine(schema_url)
    yield engine
    engine.dispose()


def make_account(engine: Engine) -> int:
    with Session(engine) as session:
        accounts.create_plan(
            session=session,
            data=PlanCreate(
                name="metered", rate_limit="10/second", price_cents_per_1000_requests=7
            ),
            actor=TEST_ACTOR,
            known_models=ENGLISH_ONLY,
        )
        account = accounts.create_account(
            session=session,
            data=AccountCreate(name="acme", email="ops@acme.example", plan="metered"),
            actor=TEST_ACTOR,
        )
        session.commit()
        assert account.id is not None
        return account.id


def event(account_id: int, at: datetime, units: int = 1) -> Event:
    return Event(
        request_id=uuid.uuid4().hex,
        occurred_at=at,
        account_id=account_id,
        key_id=None,
        endpoint="entities",
        model="en_core_web_sm",
        status=200,
        chars=10,
        units=units,
        latency_ms=1.5,
        billable=True,
    )


EVENT_INSERT = (
    "INSERT INTO usage_events (request_id, occurred_at, account_id, key_id, endpoint, model,"
    " status, chars, units, latency_ms, billable) VALUES (:request_id, :occurred_at,"
    " :account_id, :key_id, :endpoint, :model, :status, :chars, :units, :latency_ms, :billable)"
)


def event_row(item: Event) -> dict[str, object]:
    return asdict(item)


def at_month(offset: int, day: int = 15, hour: int = 12) -> datetime:
    first = months.add(THIS_MONTH, offset)
    return datetime(first.year, first.month, day, hour, tzinfo=UTC)


def all_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text("SELECT * FROM usage_events ORDER BY request_id, occurred_at")
            )
        ]


def relkind(engine: Engine, name: str) -> str | None:
    with engine.connect() as connection:
        kind: str | None = connection.execute(
            text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": name}
        ).scalar()
    return kind


def partition_of(engine: Engine) -> dict[str, str]:
    """request id -> the partition holding the row."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT request_id, tableoid::regclass::text FROM usage_events")
        )
        return {row[0]: row[1] for row in rows}


def utc_month(moment: datetime) -> date:
    return months.start(moment.astimezone(UTC).date())


def test_migration_moves_every_row_into_its_month_and_back(schema_url: str, engine: Engine) -> None:
    upgrade(schema_url, "0006")
    account = make_account(engine)
    tokyo = timezone(timedelta(hours=9))
    moments = [
        datetime(2019, 3, 15, 8, 30, tzinfo=UTC),  # an old one: years of months in between
        # Month edges in UTC: the last microsecond of a month and the first of the next.
        datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        # 1 March in Tokyo is still February in UTC: it belongs to February.
        datetime(2026, 3, 1, 5, tzinfo=tokyo),
        at_month(-1),
        at_month(0, day=1, hour=0),
        datetime.now(UTC),
    ]
    events = [event(account, moment, units=index + 1) for index, moment in enumerate(moments)]
    assert len(write_events(engine, events)) == len(events)
    before = all_rows(engine)
    assert len(before) == len(events) and relkind(engine, "usage_events") == "r"

    upgrade(schema_url)

    assert relkind(engine, "usage_events") == "p"
    assert all_rows(engine) == before
    where = partition_of(engine)
    for item in events:
        assert where[item.request_id] == partition_name(utc_month(item.occurred_at)), item
    with engine.connect() as connection:
        made = sorted(partitions.month_partitions(connection))
        in_default = connection.execute(text("SELECT count(*) FROM usage_events_default")).scalar()
    # A partition for each month with events, and this one and the next ones: not every month
    # in between (one stray timestamp would make hundreds).
    ahead = {months.add(THIS_MONTH, o) for o in range(partitions.AHEAD_MONTHS + 1)}
    expected = sorted({utc_month(item.occurred_at) for item in events} | ahead)
    assert made == expected and in_default == 0
    # Still the idempotent ledger: replaying the events inserts nothing, a new one goes in.
    assert write_events(engine, events) == []
    assert len(write_events(engine, [event(account, datetime.now(UTC))])) == 1
    before = all_rows(engine)

    command.downgrade(alembic_config(schema_url), "0006")

    assert relkind(engine, "usage_events") == "r"
    assert relkind(engine, "usage_events_default") is None
    assert all_rows(engine) == before
    with engine.connect() as connection:
        index: str = connection.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                " AND indexname = 'ix_usage_events_account_time'"
            )
        ).scalar_one()
    assert "(account_id, occurred_at)" in index

    upgrade(schema_url)
    assert relkind(engine, "usage_events") == "p" and all_rows(engine) == before


def test_retention_detaches_whole_old_months_and_keeps_their_rollups(
    schema_url: str, engine: Engine
) -> None:
    upgrade(schema_url, "0006")
    account = make_account(engine)
    offsets = [-30, -5, -4, -3, -2, -1, 0]
    # Month offset -> its events: 1 + |offset| of them, 2 units each.
    events = {
        offset: [
            event(account, at_month(offset, day=1 + n % 28, hour=n % 24), units=2)
            for n in range(1 - offset)
        ]
        for offset in offsets
    }
    write_events(engine, [item for group in events.values() for item in group])
    upgrade(schema_url)  # a partition for each month with events and 2 ahead, rows moved in

    def month(offset: int) -> str:
        return f"{months.add(THIS_MONTH, offset):%Y-%m}"

    with Session(engine) as session:
        billed = {o: reconcile(session, account, month(o)) for o in offsets}
        invoiced = {o: invoices(session, month(o)) for o in offsets}
    for offset in offsets:
        units = 2 * len(events[offset])
        assert billed[offset] == {"events": units, "rollups": units, "invoice": units}

    report = partitions.maintain(engine, today=TODAY, retention_months=3)

    # The current month and the 3 before it are kept; everything older is dropped whole.
    dropped = [partition_name(months.add(THIS_MONTH, o)) for o in (-30, -5, -4)]
    assert report.dropped == dropped and report.created == []
    assert report.cutoff == months.add(THIS_MONTH, -3)
    for name in dropped:
        assert relkind(engine, name) is None, f"{name} still exists"
    with engine.connect() as connection:
        kept = sorted(partitions.month_partitions(connection))
    assert kept == [months.add(THIS_MONTH, o) for o in range(-3, partitions.AHEAD_MONTHS + 1)]
    where = partition_of(engine)
    for offset in offsets:
        for item in events[offset]:
            if offset >= -3:
                assert where[item.request_id] == partition_name(utc_month(item.occurred_at))
            else:
                assert item.request_id not in where
    with Session(engine) as session:
        for offset in offsets:
            after = reconcile(session, account, month(offset))
            units = 2 * len(events[offset])
            # Rollups and invoices for every month; raw events only for the kept months.
            raw = units if offset >= -3 else 0
            assert after == {"events": raw, "rollups": units, "invoice": units}, offset
            assert invoices(session, month(offset)) == invoiced[offset]

    again = partitions.maintain(engine, today=TODAY, retention_months=3)
    assert again.dropped == [] and again.created == [] and again.months == report.months


def test_an_event_no_month_takes_is_stored_and_reported(engine: Engine, schema_url: str) -> None:
    upgrade(schema_url)
    account = make_account(engine)
    far = event(account, datetime(2099, 6, 1, tzinfo=UTC))
    soon = event(account, at_month(partitions.AHEAD_MONTHS + 1))
    assert write_events(engine, [far, soon]) == [far, soon]
    assert write_events(engine, [far]) == []  # still idempotent there
    where = partition_of(engine)
    assert where[far.request_id] == where[soon.request_id] == "usage_events_default"

    report = partitions.maintain(engine, today=TODAY)
    assert report.created == [] and report.default_rows == 2
    assert any(
        line.startswith("warning: 2 events in usage_events_default") for line in report.lines()
    )

    # Making the month of `soon` moves its row there, and says so; `far` stays, reported.
    report = partitions.maintain(engine, today=TODAY, ahead=partitions.AHEAD_MONTHS + 1)
    name = partition_name(months.add(THIS_MONTH, partitions.AHEAD_MONTHS + 1))
    assert report.created == [name] and report.moved == {name: 1}
    assert f"moved 1 events from usage_events_default into {name} (their month)" in report.lines()
    assert report.default_rows == 1 and report.default_first == far.occurred_at
    where = partition_of(engine)
    assert (where[soon.request_id], where[far.request_id]) == (name, "usage_events_default")
    assert len(all_rows(engine)) == 2


def test_the_app_makes_this_months_partition_and_the_default_at_start_up(
    engine: Engine, schema_url: str
) -> None:
    upgrade(schema_url)
    current = partition_name(THIS_MONTH)
    with engine.begin() as connection:
        connection.execute(text(f'ALTER TABLE usage_events DETACH PARTITION "{current}"'))
        connection.execute(text(f'DROP TABLE "{current}"'))
        connection.execute(text("DROP TABLE usage_events_default"))
    assert relkind(engine, current) is None
    asyncio.run(make_ledger_partitions(engine))
    assert relkind(engine, current) == relkind(engine, "usage_events_default") == "r"
    with engine.connect() as connection:
        attached = partitions.month_partitions(connection)
    assert attached[THIS_MONTH] == current


def test_an_event_committed_during_the_migration_is_kept(schema_url: str, engine: Engine) -> None:
    """The migration holds writes from its first statement: an insert in flight commits either
    before the copy (and is copied) or after the migration (into the new table), never in
    between, where the old table's DROP would take it along."""
    upgrade(schema_url, "0006")
    account = make_account(engine)
    writes = make_engine(schema_url)
    writer = writes.connect()
    transaction = writer.begin()
    in_flight = event(account, datetime.now(UTC))
    writer.execute(text(EVENT_INSERT), event_row(in_flight))
    migration = threading.Thread(target=upgrade, args=(schema_url,))
    migration.start()

    def migration_waits() -> bool:
        with engine.connect() as connection:
            waiting: int = connection.execute(
                text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).scalar_one()
        return waiting > 0

    try:
        assert eventually(migration_waits, timeout=10)
        transaction.commit()  # the request's answer would go out now
    finally:
        writer.close()
        migration.join(60)
        writes.dispose()
    assert relkind(engine, "usage_events") == "p"
    assert in_flight.request_id in partition_of(engine)


def test_making_a_month_lets_the_ledger_take_events_meanwhile(
    schema_url: str, engine: Engine
) -> None:
    """A partition is made apart and attached: the request path's inserts into the other months
    go on while it happens (CREATE TABLE ... PARTITION OF would stop them). Reads of the raw
    events (reconciliation only: the pages read rollups) wait for the default partition."""
    upgrade(schema_url)
    account = make_account(engine)
    with engine.connect() as making:
        transaction = making.begin()
        making.execute(text("SET LOCAL lock_timeout = '5s'"))
        partitions._make_month(making, months.add(THIS_MONTH, 12))
        # Still uncommitted: another connection commits this month's event meanwhile.
        writes = make_engine(schema_url)
        with writes.connect() as other:
            other.execute(text("SET lock_timeout = '1s'"))
            other.execute(text(EVENT_INSERT), event_row(event(account, datetime.now(UTC))))
            other.commit()
        writes.dispose()
        transaction.commit()
    with engine.connect() as connection:
        assert months.add(THIS_MONTH, 12) in partitions.month_partitions(connection)
        assert connection.execute(text("SELECT count(*) FROM usage_events")).scalar_one() == 1
