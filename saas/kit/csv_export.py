"""Every CSV the service writes (invoices, a customer's usage) comes from `to_csv`, which defuses
formula injection as OWASP recommends: a text cell that begins with `=`, `+`, `-`, `@`, a tab or
a carriage return is prefixed with `'`, so that a spreadsheet shows it instead of evaluating it
(an account named `=HYPERLINK(...)` on the operator's invoice sheet). Numbers stay numbers."""

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(
    fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]], *, lineterminator: str = "\r\n"
) -> str:
    """A header line, then one line per row, each cell defused."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows({name: safe_cell(value) for name, value in row.items()} for row in rows)
    return buffer.getvalue()
