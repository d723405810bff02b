"""Monthly partitions of the usage ledger on PostgreSQL: made ahead, dropped whole when expired.

`usage_events` is partitioned by range of `occurred_at`, one partition per calendar month (UTC)
named `usage_events_YYYY_MM`, plus `usage_events_default` for any row no month partition takes,
so an insert never fails for want of a partition. The app makes the current month and the next
AHEAD_MONTHS at start-up; `saas maintain` (daily) does the same and drops the months older than
the retention by DETACH PARTITION + DROP TABLE: a whole month goes at once, never by DELETE, so
the ledger's size is bounded and dropping costs no vacuum. Rollups are a separate table and stay.

SQLite keeps one plain table (one host): everything here is a no-op there.

Each step is its own short transaction, under an advisory lock (workers starting together and
the cron job take turns) and a lock timeout (DETACH waits for the parent's exclusive lock; it
must not queue the request path behind a long query: it gives up and the next run retries).
"""

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from saas.kit import months
from saas.kit.migrations import DEFAULT_PARTITION, MONTH_PARTITION

PARENT = "usage_events"
AHEAD_MONTHS = 2  # months made beyond the current one
LOCK_TIMEOUT = "5s"
DETACH_LOCK_TIMEOUT = "500ms"
DETACH_ATTEMPTS = 5


def partition_name(first: date) -> str:
    return f"usage_events_{first.year:04d}_{first.month:02d}"


def bound(first: date) -> str:
    """A month's first instant as a timestamptz literal, in UTC whatever the session's zone."""
    return f"'{first.isoformat()} 00:00:00+00'"


def retention_cutoff(today: date, retention_months: int) -> date:
    """The first month kept: the current month and the `retention_months` before it are kept,
    so every raw event is kept at least `retention_months` full months."""
    return months.add(months.start(today), -retention_months)


@dataclass
class Maintenance:
    """What one run found and did, for the CLI to print and the app to log."""

    partitioned: bool
    created: list[str] = field(default_factory=list)
    # Partition made -> rows moved into it from the default partition (they were in its month).
    moved: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    months: list[str] = field(default_factory=list)  # the month partitions after the run
    default_rows: int = 0
    default_first: datetime | None = None
    default_last: datetime | None = None
    cutoff: date | None = None

    def lines(self) -> list[str]:
        if not self.partitioned:
            return ["usage_events is one plain table here (SQLite): nothing to do"]
        out = [f"created {name}" for name in self.created]
        out += [
            f"moved {rows} events from {DEFAULT_PARTITION} into {name} (their month)"
            for name, rows in self.moved.items()
        ]
        out += [f"dropped {name} (detached, then dropped)" for name in self.dropped]
        if self.cutoff is not None:
            out.append(f"raw events kept from {self.cutoff:%Y-%m}; rollups kept for every month")
        span = f"{self.months[0]} .. {self.months[-1]}" if self.months else "none"
        out.append(f"month partitions: {len(self.months)} ({span})")
        if self.default_rows:
            assert self.default_first is not None and self.default_last is not None
            out.append(
                f"warning: {self.default_rows} events in {DEFAULT_PARTITION}"
                f" ({self.default_first.isoformat()} .. {self.default_last.isoformat()}), in no"
                " month made ahead; left there (they count and bill as usual). They move into"
                " their month when it is made, and are never dropped by retention:"
                " check the clocks of the hosts that wrote them"
            )
        else:
            out.append(f"{DEFAULT_PARTITION} is empty")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "partitioned": self.partitioned,
            "created": self.created,
            "moved": self.moved,
            "dropped": self.dropped,
            "months": self.months,
            "raw_events_kept_from": None if self.cutoff is None else f"{self.cutoff:%Y-%m}",
            "default_rows": self.default_rows,
        }


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    relkind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": PARENT}
    ).scalar()
    return relkind == "p"


def month_partitions(connection: Connection) -> dict[date, str]:
    """The month partitions attached to usage_events, by first day."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:name)"
        ),
        {"name": PARENT},
    )
    names: Sequence[str] = rows.scalars().all()
    found = {}
    for name in names:
        match = MONTH_PARTITION.fullmatch(name)
        if match:
            found[date(int(match[1]), int(match[2]), 1)] = name
    return found


def _lock(connection: Connection) -> None:
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    # Per schema: test runs (and deployments) sharing a database do not wait for each other.
    connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.usage_events'))")
    )


def _make_month(connection: Connection, first: date) -> int:
    """Make the month's partition, moving in the rows of that month already in the default
    partition. Made apart and then attached, with a CHECK that spares the attach a scan: ATTACH
    takes a lock on the ledger that inserts and queries pass (SHARE UPDATE EXCLUSIVE), where
    CREATE TABLE ... PARTITION OF would stop them all (ACCESS EXCLUSIVE). Returns how many rows
    were moved."""
    name, after = partition_name(first), months.add(first, 1)
    values = f"FROM ({bound(first)}) TO ({bound(after)})"
    in_month = f"occurred_at >= {bound(first)} AND occurred_at < {bound(after)}"
    # Inserts that would land in the default partition wait until this commits: one of the
    # month arriving after the move would make the ATTACH fail. Inserts into the month
    # partitions go on.
    connection.execute(text(f'LOCK TABLE "{DEFAULT_PARTITION}" IN SHARE ROW EXCLUSIVE MODE'))
    connection.execute(
        text(f'CREATE TABLE "{name}" (LIKE "{PARENT}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    )
    connection.execute(
        text(f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_bounds" CHECK ({in_month})')
    )
    moved = connection.execute(
        text(
            f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE {in_month} RETURNING *)'
            f' INSERT INTO "{name}" SELECT * FROM moved'
        )
    ).rowcount
    connection.execute(
        text(f'ALTER TABLE "{PARENT}" ATTACH PARTITION "{name}" FOR VALUES {values}')
    )
    connection.execute(text(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_bounds"'))
    return int(moved)


def _drop_month(engine: Engine, name: str) -> bool:
    """Detach and drop a month's partition; False if another run dropped it meanwhile. DETACH
    stops the ledger's inserts and queries while it waits for its lock (CONCURRENTLY is not
    allowed beside a default partition), so it waits briefly, and tries again a little later."""
    for attempt in range(DETACH_ATTEMPTS):
        try:
            with engine.begin() as connection:
                _lock(connection)
                if name not in month_partitions(connection).values():
                    return False
                connection.execute(text(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'"))
                connection.execute(text(f'ALTER TABLE "{PARENT}" DETACH PARTITION "{name}"'))
                connection.execute(text(f'DROP TABLE "{name}"'))
            return True
        except OperationalError:
            if attempt == DETACH_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.5, 2.0))  # a cron job: let the long query finish
    raise AssertionError("unreachable")


def maintain(
    engine: Engine,
    *,
    today: date,
    ahead: int = AHEAD_MONTHS,
    retention_months: int | None = None,
) -> Maintenance:
    """Make the default partition and the months from `today`'s to `ahead` after it; with
    `retention_months`, drop the month partitions older than that (see retention_cutoff).
    Idempotent. A plain table (SQLite, or PostgreSQL before the migration) is left alone."""
    with engine.connect() as connection:
        if not is_partitioned(connection):
            return Maintenance(partitioned=False)
        has_default: bool = connection.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"), {"name": DEFAULT_PARTITION}
        ).scalar_one()
    report = Maintenance(partitioned=True)
    current = months.start(today)
    if not has_default:  # only if someone dropped it: the migration makes it
        with engine.begin() as connection:
            _lock(connection)
            connection.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{DEFAULT_PARTITION}"'
                    f' PARTITION OF "{PARENT}" DEFAULT'
                )
            )
        report.created.append(DEFAULT_PARTITION)
    for offset in range(ahead + 1):
        first = months.add(current, offset)
        with engine.begin() as connection:
            _lock(connection)
            if first in month_partitions(connection):
                continue
            moved = _make_month(connection, first)
        report.created.append(partition_name(first))
        if moved:
            report.moved[partition_name(first)] = moved
    if retention_months is not None:
        report.cutoff = retention_cutoff(today, retention_months)
        with engine.connect() as connection:
            expired = sorted(
                name
                for first, name in month_partitions(connection).items()
                if first < report.cutoff
            )
        for name in expired:
            if _drop_month(engine, name):
                report.dropped.append(name)
    with engine.connect() as connection:
        report.months = [f"{first:%Y-%m}" for first in sorted(month_partitions(connection))]
        row = connection.execute(
            text(f'SELECT count(*), min(occurred_at), max(occurred_at) FROM "{DEFAULT_PARTITION}"')
        ).one()
    count: int = row[0]
    first_at: datetime | None = row[1]
    last_at: datetime | None = row[2]
    report.default_rows = count
    report.default_first = None if first_at is None else first_at.astimezone(UTC)
    report.default_last = None if last_at is None else last_at.astimezone(UTC)
    return report
