"""The one way commands print: aligned columns for people, or --json for programs. Rows come
from public schemas, so nothing secret can be printed by a listing."""

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from pydantic import BaseModel

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def as_data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [as_data(item) for item in value]
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(as_data(value), indent=2, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value) or "-"
    return str(value)


def table(rows: Sequence[BaseModel | dict[str, Any]], columns: Sequence[str]) -> None:
    """Aligned columns with a header; None shows as '-'."""
    data = [as_data(row) for row in rows]
    cells = [[_cell(row.get(column)) for column in columns] for row in data]
    widths = [
        max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)
    ]
    for line in [list(columns), *cells]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def listing(
    rows: Sequence[BaseModel | dict[str, Any]], columns: Sequence[str], as_json: bool
) -> None:
    if as_json:
        emit_json(list(rows))
    else:
        table(rows, columns)
