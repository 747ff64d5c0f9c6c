"""One source as a stream of typed rows and rejects: read, checked up front, made into rows,
ids kept unique, edit sessions gathered into chains.

- Up front: the first ``PEEK_ROWS`` readable records are looked at before any row is made; a
  field the kind requires whose column none of them has is a mapping mistake, raised as one
  ``SourceError`` line (a JSONL with wrong column names never "succeeds" with 0 rows).
- Ids: a row whose id repeats an earlier row's is a ``source:duplicate-id`` reject; every id a
  source yields (row, exchange ``id#k``, step ``chain#turn``, chain ``chain#a-b``) is unique.
- Chains (``chain`` + ``turn`` mapped): adjacent rows of one chain, in turn order; a maximal
  run of consecutive turns with two or more steps is one ``EditChain``, a lone step stays an
  ``EditRow`` (its source image is the previous turn's output, uploaded).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from synth.contract import Reject
from synth.sources.checks import check_records
from synth.sources.layout import detect_format
from synth.sources.readers import Record, read_records
from synth.sources.rows import EditChain, EditRow, SourceRow, make_rows
from synth.sources.spec import SourceSpec

PEEK_ROWS = 32  # records looked at before the first row is made
MAX_CHAIN = 64  # steps of one chain held at once; a longer run is cut there


def iter_source_rows(
    spec: SourceSpec, base_dir: str | Path, start: int = 0
) -> Iterator[SourceRow | Reject]:
    """Every row of one source, in the source's own stable order, as a typed row or a reject.

    Streams: memory holds one batch of rows (and one chain). ``start`` skips that many items
    (rows and rejects) of the stream. A configuration problem (a required column absent from
    the data, a split that does not exist) raises ``SourceError`` before the first row."""
    base = Path(base_dir)
    if spec.format is None:
        spec = spec.model_copy(
            update={"format": detect_format(spec.path, base, spec.split, spec.subset)}
        )
    records = _checked(spec, read_records(spec, base))
    items: Iterator[SourceRow | Reject] = (
        item for record in records for item in make_rows(spec, record)
    )
    items = _unique_ids(spec, items)
    if spec.chained:
        items = _chains(spec, items)
    return itertools.islice(items, start, None)


def _checked(spec: SourceSpec, records: Iterator[Record]) -> Iterator[Record]:
    head = list(itertools.islice(records, PEEK_ROWS))
    check_records(spec, head)
    yield from head
    yield from records


def _unique_ids(
    spec: SourceSpec, items: Iterable[SourceRow | Reject]
) -> Iterator[SourceRow | Reject]:
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Reject):
            seen.add(item.source_row)
            yield item
        elif item.row_id in seen:
            yield Reject(
                stage="source",
                reason="source:duplicate-id",
                detail=f"row id {item.row_id!r} repeats an earlier row's; two samples never "
                "share an id (map `id:` to a unique column, or leave it out to name rows by "
                "position)",
                source=spec.name,
                source_row=item.row_id,
            )
        else:
            seen.add(item.row_id)
            yield item


def _chains(spec: SourceSpec, items: Iterable[SourceRow | Reject]) -> Iterator[SourceRow | Reject]:
    group: list[EditRow] = []
    for item in items:
        if isinstance(item, EditRow):
            if group and (item.chain != group[0].chain or len(group) >= MAX_CHAIN):
                yield from _runs(spec, group)
                group = []
            group.append(item)
        else:
            yield item  # a reject: it never joins a chain, so the chain splits around it
    if group:
        yield from _runs(spec, group)


def _runs(spec: SourceSpec, group: list[EditRow]) -> Iterator[SourceRow]:
    steps = sorted(group, key=lambda r: r.turn)
    run: list[EditRow] = []
    for step in steps:
        if run and step.turn != run[-1].turn + 1:
            yield _chain_or_step(spec, run)
            run = []
        run.append(step)
    if run:
        yield _chain_or_step(spec, run)


def _chain_or_step(spec: SourceSpec, run: list[EditRow]) -> SourceRow:
    if len(run) == 1:
        return run[0]
    first, last = run[0], run[-1]
    return EditChain(spec.name, f"{first.chain}#{first.turn}-{last.turn}", steps=tuple(run))
