"""Raw records from each storage format, streamed in a stable order with flat memory.

A reader yields ``Record``s: the row's index in the source, its values keyed by stored column
(nested values as stored: structs and JSON objects as dicts, lists as lists), the folder that
relative image paths in it resolve against, and where it sits (file and line, row, item or
sample) so every reject and error can say so. A row that cannot be read at all (a JSONL line
that is not UTF-8 or not JSON, a WebDataset member that does not decode) becomes a ``Record``
with an ``error``; the stream goes on. What no row can survive (a JSON array or a tar archive
that stops being parseable) raises ``SourceError``.

Parquet streams by batches, JSONL by lines, JSON arrays and COCO files through ``ijson``,
WebDataset tars member by member (``tarfile`` in stream mode), ``datasets`` folders by Arrow
batches: memory holds one batch or one sample, never a file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from synth.sources.checks import check_schema
from synth.sources.errors import SourceError
from synth.sources.layout import is_saved_dataset, split_files
from synth.sources.paths import top_column
from synth.sources.spec import SourceSpec

BATCH_ROWS = 64  # rows held at once: images stay in memory one batch at a time


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    values: dict[str, Any]
    root: Path | None  # folder relative image paths resolve against; None for a Hub dataset
    file: str = ""  # the data file, as a person finds it
    position: str = ""  # "line 7", "row 12", "item 3", "sample 000000012", ...
    error: tuple[str, str] | None = None  # (reason, detail) when the row could not be read

    @property
    def where(self) -> str:
        return " ".join(p for p in (self.file, self.position) if p)


def read_records(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    from synth.sources.folders import read_coco, read_imagefolder, read_webdataset

    readers = {
        "parquet": _parquet,
        "jsonl": _jsonl,
        "json": _json_array,
        "coco": read_coco,
        "imagefolder": read_imagefolder,
        "webdataset": read_webdataset,
        "hf": _hf,
    }
    assert spec.format is not None, "load the spec with load_sources_file to resolve its format"
    records: Iterator[Record] = readers[spec.format](spec, base_dir)
    return records


def source_files(spec: SourceSpec, base_dir: Path, suffixes: frozenset[str]) -> list[Path]:
    """The data files a source reads: the file itself, or the files of its split in a folder."""
    location = Path(spec.location(base_dir))
    if location.is_file():
        return [location]
    files = [
        f for f in split_files(location, spec.split, spec.subset) if f.suffix.lower() in suffixes
    ]
    if not files:
        raise SourceError(
            str(location),
            f"split {spec.split!r} has no {'/'.join(sorted(suffixes))} files",
            fix="check `path:`, `split:` and `format:`",
        )
    return files


def display(file: Path, base_dir: Path) -> str:
    try:
        return file.resolve().relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        return str(file)


def wanted_columns(spec: SourceSpec, available: list[str]) -> list[str]:
    """The stored columns the spec's paths start from, among ``available``."""
    names = set(available)
    tops = (top_column(c, names) for c in spec.field_columns().values())
    return [c for c in dict.fromkeys(tops) if c in names]


def _parquet(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    index = 0
    for file in source_files(spec, base_dir, frozenset({".parquet"})):
        pf = pq.ParquetFile(file)
        name, row = display(file, base_dir), 0
        check_schema(spec, pf.schema_arrow.names, name)
        columns = wanted_columns(spec, pf.schema_arrow.names)
        root = spec.image_folder(base_dir) or file.parent
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for values in batch.to_pylist():
                yield Record(index, values, root, name, f"row {row}")
                index, row = index + 1, row + 1


def _jsonl(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    index = 0
    for file in source_files(spec, base_dir, frozenset({".jsonl", ".ndjson"})):
        root = spec.image_folder(base_dir) or file.parent
        for record in jsonl_records(file, root, display(file, base_dir), index):
            yield record
            index = record.index + 1


def jsonl_records(file: Path, root: Path | None, name: str, start: int = 0) -> Iterator[Record]:
    """One record per non-blank line; a line that is not UTF-8 or not a JSON object is a
    record with an error, and the lines after it are read as usual."""
    index = start
    with file.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            values: Any = {}
            error: tuple[str, str] | None = None
            try:
                values = orjson.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                error = (
                    "source:bad-encoding",
                    f"not UTF-8 text (byte {err.start + 1}: {err.reason})",
                )
            except orjson.JSONDecodeError as err:
                error = ("source:bad-json", f"not valid JSON ({err})")
            if error is None and not isinstance(values, dict):
                values = {}
                error = ("source:bad-json", "not a JSON object")
            yield Record(
                index, values if error is None else {}, root, name, f"line {line_no}", error
            )
            index += 1


def _json_array(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    """A file holding one JSON array of row objects (LLaVA, ShareGPT), streamed item by item."""
    import ijson

    index = 0
    for file in source_files(spec, base_dir, frozenset({".json"})):
        root = spec.image_folder(base_dir) or file.parent
        name, item = display(file, base_dir), 0
        with file.open("rb") as handle:
            try:
                for values in ijson.items(handle, "item", use_float=True):
                    error = (
                        None
                        if isinstance(values, dict)
                        else ("source:bad-json", "not a JSON object")
                    )
                    yield Record(
                        index, values if error is None else {}, root, name, f"item {item}", error
                    )
                    index, item = index + 1, item + 1
            except (ijson.JSONError, UnicodeDecodeError) as err:
                raise SourceError(
                    name,
                    f"stops being valid JSON after {item} item(s): {err}",
                    fix="repair or re-export the file (items already read are kept)",
                ) from None


def csv_records(file: Path, root: Path | None, name: str) -> Iterator[Record]:
    with file.open(encoding="utf-8", newline="") as handle:
        for index, values in enumerate(csv.DictReader(handle)):
            yield Record(index, dict(values), root, name, f"line {index + 2}")


def _hf(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    """A dataset saved with ``save_to_disk``, a local folder ``datasets`` can load, or a Hub id.

    Rows are read in Arrow format, so image columns arrive as their stored ``{"bytes", "path"}``
    structs: nothing is decoded here, and the original encoded bytes are kept."""
    import datasets

    location = spec.location(base_dir)
    local = location if isinstance(location, Path) else None
    ds: Any
    if local is not None and is_saved_dataset(local):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise SourceError(
                    str(local),
                    f"has no split {spec.split!r} (splits: {sorted(ds)})",
                    fix="set `split:`",
                )
            ds = ds[spec.split]
    else:
        ds = datasets.load_dataset(str(location), spec.subset, split=spec.split, streaming=True)
    root = spec.image_folder(base_dir) or local
    name = display(local, base_dir) if local is not None else str(location)
    names = ds.column_names
    if names is not None:
        check_schema(spec, list(names), name)
        ds = ds.select_columns(wanted_columns(spec, list(names)))
    index = 0
    for table in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
        assert isinstance(table, pa.Table)
        for values in table.to_pylist():
            yield Record(index, values, root, name, f"row {index}")
            index += 1
