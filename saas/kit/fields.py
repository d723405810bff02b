"""Field types the tables, schemas and routes share: ids and numbers within the columns' 32 bits,
text the database can store, names people read, dates as ISO text; and `never_null` for
models of changes. No web framework and nothing of the project: a table model imports these,
never the OpenAPI module."""

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

# Ids and a plan's numbers are INTEGER columns: 32 bits in PostgreSQL (SQLite's go to 2**63 - 1).
# No row has a larger id, and a larger number would fail in the database (500) instead of 422.
MAX_INT = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_INT)]
# Text that is stored or searched: PostgreSQL's text refuses NUL, which would be a 500 there.
Stored = Annotated[str, Field(pattern="^[^\\x00]*$")]


# Characters a name may not hold: controls (C0, DEL, C1), line and paragraph separators, and
# the invisible format characters (bidirectional overrides, zero-width space, BOM...) that let
# a name pass for another; but for the zero-width (non-)joiners, which emoji sequences and
# Persian words need. Within the Basic Multilingual Plane, so that the schema can say it too.
def _character_class(codes: list[int]) -> str:
    """Code points as a regex class body of `\\uXXXX` ranges, which every regex engine reads."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "".join(
        f"\\u{first:04x}" if first == last else f"\\u{first:04x}-\\u{last:04x}"
        for first, last in runs
    )


_UNSEEN = _character_class(
    [
        c
        for c in range(0x10000)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp") and c not in (0x200C, 0x200D)
    ]
)
_UNSEEN_CHAR = re.compile(f"[{_UNSEEN}]")


def _readable(value: str) -> str:
    if _UNSEEN_CHAR.search(value):
        raise ValueError(
            "must be one line of visible text: no control, line-break or invisible formatting"
            " characters"
        )
    return value


# A name people read (an account's, a key's): what would garble or disguise it in the dashboard,
# the CSVs and the CLI's tables (an escape sequence in a terminal, a right-to-left override) is
# refused, NUL (a 500 in PostgreSQL) with it. The validator gives the message; the schema the
# same rule.
Name = Annotated[
    str,
    Field(json_schema_extra={"pattern": f"^[^{_UNSEEN}]*$"}),
    AfterValidator(_readable),
]
# How far a listing may skip (SQLite refuses an OFFSET beyond 64 bits).
Offset = Annotated[int, Field(ge=0, le=MAX_INT)]


# A text with something to analyse, as the schema's `pattern` (a character str.strip() keeps):
# the server refuses a blank one with 400 itself, so the pattern only documents the rule. Each
# character escaped, so that every regex engine reads the class alike.
_BLANK = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
NOT_BLANK = f"[^{_BLANK}]"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: object) -> object:
    # Pydantic also reads a number as a Unix time ("0" is 1970-01-01): not a `format: date`.
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("a date as YYYY-MM-DD")
    return value


def _no_number(value: object) -> object:
    # Pydantic reads a number as a Unix time: not a `format: date-time`.
    if isinstance(value, int | float):
        raise ValueError("a date and time as ISO 8601 text")
    return value


# An Idempotency-Key: 1 to 255 printable ASCII characters (Stripe's bound), safe to store and log.
IDEMPOTENCY_KEY_PATTERN = r"^[ -~]{1,255}$"

IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[datetime, BeforeValidator(_no_number)]


def never_null(*nullable: str) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` for a model of changes, whose fields may be left out but not be null
    (but those named: null means something there): each field's schema without pydantic's
    `null` choice and `default: null`."""

    def edit(schema: dict[str, Any]) -> None:
        for name, field in schema.get("properties", {}).items():
            choices = field.get("anyOf")
            if name in nullable or not choices:
                continue
            del field["anyOf"]
            field.update(next(choice for choice in choices if choice != {"type": "null"}))
            field.pop("default", None)

    return edit
