"""usage_events partitioned by month of occurred_at (PostgreSQL only; SQLite keeps one table)

The rows are moved, none lost: a partitioned table is made beside the old one with a partition
for every month from the oldest event's to two months after the newest (or this month's) and a
default partition, the rows are copied with INSERT ... SELECT, the counts compared, and only then
is the old table dropped and the new one given its name. Downgrade does the reverse into one
plain table. Both run in the migration's transaction: a failure leaves the table as it was.

Self-contained on purpose (a migration must not change when saas/usage/partitions.py does), so
the month arithmetic is repeated here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_MONTHS = 2
COLUMNS = (
    "request_id varchar(32) NOT NULL, occurred_at timestamptz NOT NULL,"
    " account_id integer NOT NULL, key_id integer, endpoint varchar(64) NOT NULL,"
    " model varchar(64), status smallint NOT NULL, chars integer NOT NULL,"
    " units integer NOT NULL, latency_ms double precision NOT NULL, billable boolean NOT NULL"
)
NAMES = (
    "request_id, occurred_at, account_id, key_id, endpoint, model, status, chars, units,"
    " latency_ms, billable"
)


def _add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _bound(first: date) -> str:
    return f"'{first.isoformat()} 00:00:00+00'"


def _month(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def _count(table: str) -> int:
    return int(op.get_bind().execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())


def _hold_writes() -> None:
    """New events wait until the migration commits (reads go on): one committed between the
    copy and the DROP would go with the old table, billed to nobody. So run it while the API is
    stopped or quiet: its writes wait for the copy (README, Operating)."""
    op.execute("LOCK TABLE usage_events IN EXCLUSIVE MODE")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: one plain table (one host)
    bind = op.get_bind()
    _hold_writes()
    # A partition per month that has events (not every month between the oldest and newest:
    # one stray timestamp would make hundreds), and this month and the next ones.
    months = {
        _month(row[0])
        for row in bind.execute(
            sa.text(
                "SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')"
                " AT TIME ZONE 'UTC' FROM usage_events"
            )
        )
    }
    this_month = _month(datetime.now(UTC))
    months |= {_add_months(this_month, ahead) for ahead in range(AHEAD_MONTHS + 1)}
    op.execute(
        f"CREATE TABLE usage_events_partitioned ({COLUMNS},"
        " CONSTRAINT usage_events_partitioned_pkey PRIMARY KEY (request_id, occurred_at))"
        " PARTITION BY RANGE (occurred_at)"
    )
    op.execute("CREATE TABLE usage_events_default PARTITION OF usage_events_partitioned DEFAULT")
    for month in sorted(months):
        op.execute(
            f"CREATE TABLE usage_events_{month.year:04d}_{month.month:02d}"
            " PARTITION OF usage_events_partitioned"
            f" FOR VALUES FROM ({_bound(month)}) TO ({_bound(_add_months(month, 1))})"
        )
    op.execute(f"INSERT INTO usage_events_partitioned ({NAMES}) SELECT {NAMES} FROM usage_events")
    moved, kept = _count("usage_events_partitioned"), _count("usage_events")
    if moved != kept:  # cannot happen (same key, same rows); checked before anything is dropped
        raise RuntimeError(f"usage_events: {kept} rows, {moved} copied; nothing changed")
    op.execute("DROP TABLE usage_events")
    op.execute("ALTER TABLE usage_events_partitioned RENAME TO usage_events")
    op.execute(
        "ALTER TABLE usage_events RENAME CONSTRAINT usage_events_partitioned_pkey"
        " TO usage_events_pkey"
    )
    op.execute(
        "CREATE INDEX ix_usage_events_account_time ON usage_events (account_id, occurred_at)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _hold_writes()
    op.execute(
        f"CREATE TABLE usage_events_plain ({COLUMNS},"
        " CONSTRAINT usage_events_plain_pkey PRIMARY KEY (request_id, occurred_at))"
    )
    op.execute(f"INSERT INTO usage_events_plain ({NAMES}) SELECT {NAMES} FROM usage_events")
    moved, kept = _count("usage_events_plain"), _count("usage_events")
    if moved != kept:
        raise RuntimeError(f"usage_events: {kept} rows, {moved} copied; nothing changed")
    op.execute("DROP TABLE usage_events")  # the partitions go with it
    op.execute("ALTER TABLE usage_events_plain RENAME TO usage_events")
    op.execute(
        "ALTER TABLE usage_events RENAME CONSTRAINT usage_events_plain_pkey TO usage_events_pkey"
    )
    op.execute(
        "CREATE INDEX ix_usage_events_account_time ON usage_events (account_id, occurred_at)"
    )
