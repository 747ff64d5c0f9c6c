"""Single-turn source data for the composer: the sources file, and typed rows streamed from it.

A sources file names each source, its kind (t2i, edit, subject, vqa, chat), where it is (a
Parquet file or folder, a JSONL file with image paths, an image folder, or a ``datasets`` dataset)
and how its columns map onto the fields of that kind. ``iter_source_rows`` streams one source as
typed rows; a row that cannot become one (no caption, an unreadable image, an empty instruction,
...) comes out as a ``Reject`` with its reason and row id, and the stream goes on.

    sources = load_sources_file("examples/sources.yaml")
    for item in iter_source_rows(sources.get("photos"), sources.base_dir):
        ...  # a T2IRow, or a Reject for the rejects table
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from synth.contract import Reject
from synth.sources.readers import read_records
from synth.sources.rows import (
    REASONS,
    ChatRow,
    EditRow,
    SourceRow,
    SubjectRow,
    T2IRow,
    VQARow,
    check_image,
    load_image,
    make_row,
)
from synth.sources.spec import (
    KIND_FIELDS,
    REQUIRED_FIELDS,
    Format,
    Kind,
    SourcesFile,
    SourceSpec,
    detect_format,
    load_sources_file,
)

__all__ = [
    "KIND_FIELDS",
    "REASONS",
    "REQUIRED_FIELDS",
    "ChatRow",
    "EditRow",
    "Format",
    "Kind",
    "SourceRow",
    "SourceSpec",
    "SourcesFile",
    "SubjectRow",
    "T2IRow",
    "VQARow",
    "check_image",
    "detect_format",
    "iter_source_rows",
    "load_image",
    "load_sources_file",
]


def iter_source_rows(
    spec: SourceSpec, base_dir: str | Path, start: int = 0
) -> Iterator[SourceRow | Reject]:
    """Every row of one source, in the source's own stable order, as a typed row or a reject.

    Streams: Parquet by batches, JSONL by lines, ``datasets`` by Arrow batches; memory holds one
    batch. ``start`` skips that many rows without checking their images (a resumed run passes
    its committed cursor). A configuration problem (a required column absent from the data)
    raises ``ValueError`` before the first row."""
    base = Path(base_dir)
    if spec.format is None:
        spec = spec.model_copy(update={"format": detect_format(spec.path, base)})
    for record in itertools.islice(read_records(spec, base), start, None):
        yield make_row(spec, record)
