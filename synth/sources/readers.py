"""Raw records from each storage format, streamed in a stable order with flat memory.

A reader yields ``Record``s: the row's index in the source, its values keyed by data column (only
the columns the spec reads), and the folder that relative image paths in it resolve against.
A line that cannot be read at all (bad JSON) becomes a ``Record`` with an ``error`` so the
caller can reject it and go on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.sources.spec import (
    _DATASETS_DIR_MARKERS,
    IMAGE_SUFFIXES,
    REQUIRED_FIELDS,
    SourceSpec,
)

BATCH_ROWS = 64  # rows held at once: images stay in memory one batch at a time


@dataclass(frozen=True)
class Record:
    index: int
    values: dict[str, Any]
    root: Path | None  # folder relative image paths resolve against; None for a Hub dataset
    error: tuple[str, str] | None = None  # (reason, detail) when the row could not be read


def read_records(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    readers = {
        "parquet": _parquet,
        "jsonl": _jsonl,
        "imagefolder": _imagefolder,
        "hf": _hf,
    }
    assert spec.format is not None, "load the spec with load_sources_file to resolve its format"
    return readers[spec.format](spec, base_dir)


def _check_columns(spec: SourceSpec, available: list[str], what: str) -> list[str]:
    """The data columns to read; a required one that is missing is a configuration error."""
    wanted = spec.field_columns()
    required = {*REQUIRED_FIELDS[spec.kind], *(["id"] if "id" in wanted else [])}
    missing = {f: c for f, c in wanted.items() if c not in available and f in required}
    if spec.kind == "chat" and not {wanted["turns"]} & set(available):
        missing.update({f: wanted[f] for f in ("user", "assistant") if wanted[f] not in available})
    if missing:
        pairs = ", ".join(f"{f} <- {c!r}" for f, c in missing.items())
        raise ValueError(
            f"source {spec.name!r}: {what} has no column for {pairs}; its columns are "
            f"{sorted(available)}. Map them in the source's `columns:` (field: column)."
        )
    return [c for c in dict.fromkeys(wanted.values()) if c in available]


def _parquet(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    location = Path(spec.location(base_dir))
    files = (
        sorted(p for p in location.rglob("*.parquet") if not p.name.startswith("."))
        if location.is_dir()
        else [location]
    )
    index = 0
    for file in files:
        pf = pq.ParquetFile(file)
        columns = _check_columns(spec, pf.schema_arrow.names, str(file))
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for values in batch.to_pylist():
                yield Record(index, values, file.parent)
                index += 1


def _jsonl(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    return _jsonl_file(Path(spec.location(base_dir)))


def _jsonl_file(file: Path) -> Iterator[Record]:
    with file.open(encoding="utf-8") as handle:
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            error: tuple[str, str] | None = None
            try:
                values = json.loads(line)
            except json.JSONDecodeError as err:
                values, error = {}, ("source:bad-json", f"line {line_no}: {err}")
            else:
                if not isinstance(values, dict):
                    values = {}
                    error = ("source:bad-json", f"line {line_no} is not a JSON object")
            yield Record(index, values, file.parent, error)
            index += 1


def _imagefolder(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    """The ``datasets`` imagefolder layout: ``metadata.jsonl`` (or ``.csv``) rows name their image
    in ``file_name`` (read as column ``image``) or ``<column>_file_name`` (read as ``<column>``),
    relative to the folder. Without a metadata file, every image under the folder in sorted
    order, captioned by the ``<stem>.txt`` beside it."""
    folder = Path(spec.location(base_dir))
    if (folder / "metadata.jsonl").exists() or (folder / "metadata.csv").exists():
        yield from _imagefolder_metadata(folder)
        return
    images = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    for index, image in enumerate(images):
        caption_file = image.with_suffix(".txt")
        caption = (
            caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else None
        )
        name = image.relative_to(folder).as_posix()
        yield Record(index, {"image": name, "caption": caption, "file_name": name}, folder)


def _imagefolder_metadata(folder: Path) -> Iterator[Record]:
    jsonl = folder / "metadata.jsonl"
    rows = _jsonl_file(jsonl) if jsonl.exists() else _csv_rows(folder / "metadata.csv")
    for record in rows:
        values = dict(record.values)
        for key in list(values):
            if key == "file_name":
                values["image"] = values[key]
            elif key.endswith("_file_name"):
                values[key.removesuffix("_file_name")] = values[key]
        yield Record(record.index, values, folder, record.error)


def _csv_rows(file: Path) -> Iterator[Record]:
    with file.open(encoding="utf-8", newline="") as handle:
        for index, values in enumerate(csv.DictReader(handle)):
            yield Record(index, dict(values), file.parent)


def _hf(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    """A dataset saved with ``save_to_disk``, a local folder ``datasets`` can load, or a Hub id.

    Rows are read in Arrow format, so image columns arrive as their stored ``{"bytes", "path"}``
    structs: nothing is decoded here, and the original encoded bytes are kept."""
    import datasets

    location = spec.location(base_dir)
    root = location if isinstance(location, Path) else None
    ds: Any
    if root is not None and any((root / m).exists() for m in _DATASETS_DIR_MARKERS):
        ds = datasets.load_from_disk(str(root))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise ValueError(
                    f"source {spec.name!r}: split {spec.split!r} not in {root} "
                    f"(splits: {sorted(ds)}); set `split:`"
                )
            ds = ds[spec.split]
    else:
        ds = datasets.load_dataset(str(location), spec.subset, split=spec.split, streaming=True)
    names = ds.column_names
    if names is not None:
        ds = ds.select_columns(_check_columns(spec, list(names), str(location)))
    index = 0
    for table in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
        assert isinstance(table, pa.Table)
        for values in table.to_pylist():
            yield Record(index, values, root)
            index += 1
