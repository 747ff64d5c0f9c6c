"""The up-front check that a source's column mapping fits its data.

A field the kind requires whose column the data does not have is a mapping mistake, not a bad
row: it is raised as one ``SourceError`` line before any row is made, naming the file, the
rows looked at, the fields and the columns there are. Formats with a schema (Parquet,
``datasets``) are checked against the schema; the others against their first records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synth.sources.errors import SourceError
from synth.sources.paths import MISSING, lookup, top_column
from synth.sources.spec import REQUIRED_FIELDS, SourceSpec


def missing_fields(spec: SourceSpec, absent: Callable[[str], bool]) -> dict[str, str]:
    """Required field -> its column, for each one ``absent(column)`` says the data lacks."""
    columns = spec.field_columns()
    required = [*REQUIRED_FIELDS[spec.kind], *(f for f in ("id", "chain", "turn") if f in columns)]
    if spec.kind == "vqa":
        required += ["turns"] if spec.conversation else ["question", "answer"]
    missing = {f: columns[f] for f in dict.fromkeys(required) if absent(columns[f])}
    if spec.kind == "chat" and absent(columns["turns"]):  # one of the two forms must be there
        exchange = {f: columns[f] for f in ("user", "assistant") if absent(columns[f])}
        if exchange:
            missing.update({"turns": columns["turns"], **exchange})
    return missing


def check_schema(spec: SourceSpec, names: list[str], file: str) -> None:
    """Raise when a required field's column starts from no stored column of ``names``."""
    available = set(names)
    missing = missing_fields(spec, lambda c: top_column(c, available) not in available)
    if missing:
        _raise(spec, missing, sorted(names), file, "")


def check_records(spec: SourceSpec, head: list[Any]) -> None:
    """Raise when no readable record in ``head`` (``Record``s) has a required field."""
    readable = [r for r in head if r.error is None]
    if not readable:
        return
    missing = missing_fields(spec, lambda c: all(lookup(r.values, c) is MISSING for r in readable))
    if missing:
        first, last = readable[0], readable[-1]
        rows = first.position if first is last else f"{first.position} to {last.position}"
        keys = sorted({k for r in readable for k in r.values})
        _raise(spec, missing, keys, first.file, f"({rows})")


def _raise(
    spec: SourceSpec, missing: dict[str, str], keys: list[str], file: str, rows: str
) -> None:
    pairs = ", ".join(f"{f} <- {c!r}" for f, c in missing.items())
    raise SourceError(
        file,
        f"source {spec.name!r} has no column for {pairs}; its columns are {keys}",
        row=rows,
        field=", ".join(missing),
        fix="map them in the source's `columns:` (field: column)",
    )
