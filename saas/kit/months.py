"""Months, the unit of quotas, invoices and the ledger's partitions: "YYYY-MM", in UTC. Every
month the service computes is computed here, so that the limiter, the ledger, the invoices and
the pages agree on where a month starts and ends and on what a month's name may be."""

import calendar
import re
from datetime import UTC, date, datetime

# Years 1000 to 9999: year 0 has no first day, and four digits are what every page shows.
PATTERN = r"^[1-9]\d{3}-(0[1-9]|1[0-2])$"
_MONTH = re.compile(PATTERN)


def of(epoch_seconds: float) -> str:
    """The month of a moment."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m")


def current() -> str:
    return of(datetime.now(UTC).timestamp())


def start(day: date) -> date:
    """The first day of the day's month."""
    return date(day.year, day.month, 1)


def add(first: date, months: int) -> date:
    """The first day of the month `months` after (or before) the one `first` starts."""
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def bounds(month: str) -> tuple[date, date]:
    """ "2026-11" -> (2026-11-01, 2026-12-01): the first day and the first day after; ValueError
    for what is not a month."""
    if not _MONTH.fullmatch(month):
        raise ValueError(f"Not a month: {month!r} (use YYYY-MM).")
    first = date(int(month[:4]), int(month[5:]), 1)
    if first.year == 9999 and first.month == 12:  # no day after it
        raise ValueError(f"Not a month: {month!r} (use YYYY-MM).")
    return first, add(first, 1)


def seconds_to_end(epoch_seconds: float) -> float:
    """From a moment to the start of the next month."""
    after = add(start(datetime.fromtimestamp(epoch_seconds, UTC).date()), 1)
    return calendar.timegm((after.year, after.month, 1, 0, 0, 0)) - epoch_seconds


def since(first: date, today: date) -> list[str]:
    """Every month from `first`'s to today's, newest first (the dashboard's month picker)."""
    names = []
    month = start(today)
    while month >= start(first):
        names.append(f"{month.year:04d}-{month.month:02d}")
        month = add(month, -1)
    return names
