"""Writes batches of usage events: raw rows inserted idempotently on the request id, the hourly
rollups of exactly the rows that were new, and the answers kept for Idempotency-Keys, in one
transaction (an answer billed is an answer a retry can replay)."""

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table

from saas.idempotency.store import Completion, save_answers
from saas.kit.db import dialect_insert, table_of
from saas.usage.models import UsageEvent, UsageRollup

EVENTS: Table = table_of(UsageEvent)
ROLLUPS: Table = table_of(UsageRollup)
ROLLUP_KEY = ["account_id", "day", "hour", "endpoint", "status"]
ROLLUP_SUMS = ["requests", "units", "billable_units", "chars"]


@dataclass(frozen=True, slots=True)
class Event:
    request_id: str
    occurred_at: datetime
    account_id: int
    key_id: int | None
    endpoint: str
    model: str | None
    status: int
    chars: int
    units: int
    latency_ms: float
    billable: bool


@functools.cache
def statements(dialect: str) -> tuple[Any, Any]:
    """The two upserts, built once per dialect (building them costs ~1 ms; both databases speak
    ON CONFLICT): insert events, skipping request ids already stored, returning the new ones; and
    add to the hourly rollups."""
    insert = dialect_insert(dialect)
    events = insert(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.request_id)
    rollups = insert(ROLLUPS)
    rollups = rollups.on_conflict_do_update(
        index_elements=ROLLUP_KEY,
        set_={name: ROLLUPS.c[name] + rollups.excluded[name] for name in ROLLUP_SUMS},
    )
    return events, rollups


def rollup_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for event in events:
        key = (
            event.account_id,
            event.occurred_at.date(),
            event.occurred_at.hour,
            event.endpoint,
            event.status,
        )
        row = sums[key]
        row[0] += 1
        row[1] += event.units
        row[2] += event.units if event.billable else 0
        row[3] += event.chars
    return [
        dict(zip(ROLLUP_KEY, key, strict=True)) | dict(zip(ROLLUP_SUMS, values, strict=True))
        for key, values in sums.items()
    ]


def write_events(
    engine: Engine, events: list[Event], answers: Sequence[Completion] = ()
) -> list[Event]:
    """Returns the events that were new; replays of events already stored change nothing.
    `answers` are the Idempotency-Key answers of these events' requests."""
    unique = list({event.request_id: event for event in events}.values())
    if not unique:
        return []
    insert_events, add_to_rollups = statements(engine.dialect.name)
    with engine.begin() as connection:
        result = connection.execute(insert_events, [asdict(event) for event in unique])
        inserted = {row.request_id for row in result}
        new = [event for event in unique if event.request_id in inserted]
        rows = rollup_rows(new)
        if rows:
            connection.execute(add_to_rollups, rows)
        if answers:
            save_answers(connection, answers)
    return new
