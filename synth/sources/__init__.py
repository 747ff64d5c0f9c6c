"""Single-turn source data for the composer: the sources file, and typed rows streamed from it.

A sources file names each source, its kind (t2i, edit, subject, compose, vqa, chat), where it
is (a file or folder in any of the layouts public datasets ship in: Parquet, JSONL, JSON
arrays, image folders, WebDataset tars, COCO annotations, Hub snapshots and ``datasets``
folders) and how its columns map onto the fields of that kind. ``iter_source_rows`` streams one
source as typed rows; a row that cannot become one (no caption, an unreadable image, an empty
instruction, a repeated id, ...) comes out as a ``Reject`` with its reason, file and row, and
the stream goes on. What no row can survive raises ``SourceError``, one line.

    sources = load_sources_file("examples/sources.yaml")
    for item in iter_source_rows(sources.get("photos"), sources.base_dir):
        ...  # a T2IRow, or a Reject for the rejects table

Modules, in the order data flows: ``spec`` (the sources file), ``layout`` (which files, which
format), ``readers`` / ``folders`` (raw records), ``paths`` (column paths into a record),
``adapters`` (conversations, placeholders), ``images``, ``rows`` (typed rows and rejects),
``stream`` (ids, chains, the up-front column check). The gallery of public layouts is
``examples/sources/``.
"""

from __future__ import annotations

from synth.sources.errors import SourceError
from synth.sources.images import check_image, load_image
from synth.sources.layout import Format, detect_format
from synth.sources.rows import (
    REASONS,
    ChatRow,
    ComposeRow,
    EditChain,
    EditRow,
    SourceRow,
    SubjectRow,
    T2IRow,
    VQARow,
    make_rows,
)
from synth.sources.spec import (
    KIND_FIELDS,
    REQUIRED_FIELDS,
    Kind,
    SourcesFile,
    SourceSpec,
    load_sources_file,
)
from synth.sources.stream import iter_source_rows

__all__ = [
    "KIND_FIELDS",
    "REASONS",
    "REQUIRED_FIELDS",
    "ChatRow",
    "ComposeRow",
    "EditChain",
    "EditRow",
    "Format",
    "Kind",
    "SourceError",
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
    "make_rows",
]
