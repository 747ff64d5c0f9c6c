"""The Parquet files a run reads: their row groups, task counts and a fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth.shards import sample_files


def resolve_files(files_or_dirs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Shard files of each directory, plus files named directly; sorted.

    A ``synth`` output directory contributes its ``train-*.parquet`` shards (not its rejects); a
    directory without them, such as a config folder of a dataset pushed with ``synth push`` and
    downloaded from the Hub (``data/stage-c/*.parquet``), contributes every ``*.parquet``."""
    items = [files_or_dirs] if isinstance(files_or_dirs, str | Path) else list(files_or_dirs)
    files: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sample_files(path) or sorted(path.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"{path} holds no Parquet sample shards")
            files.update(p.resolve() for p in found)
        elif path.is_file():
            files.add(path.resolve())
        else:
            raise FileNotFoundError(f"{path} is neither a shard file nor a directory of shards")
    return sorted(files)


@dataclass(frozen=True)
class Source:
    """Every row group of ``files`` as (file index, row group index), in file order."""

    files: tuple[Path, ...]
    rows_per_group: tuple[tuple[int, ...], ...]

    @classmethod
    def open(cls, files_or_dirs: Sequence[str | Path] | str | Path) -> Source:
        files = resolve_files(files_or_dirs)
        groups = []
        for path in files:
            meta = pq.ParquetFile(path).metadata
            groups.append(tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups)))
        return cls(tuple(files), tuple(groups))

    @cached_property
    def row_groups(self) -> list[tuple[int, int]]:
        return [(f, g) for f, groups in enumerate(self.rows_per_group) for g in range(len(groups))]

    @cached_property
    def sized_groups(self) -> list[tuple[int, int, int]]:
        """(file, group, rows) of every row group, in file order."""
        return [
            (f, g, n) for f, groups in enumerate(self.rows_per_group) for g, n in enumerate(groups)
        ]

    @property
    def num_rows(self) -> int:
        return sum(sum(groups) for groups in self.rows_per_group)

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, renamed or regrouped (resume would diverge)."""
        listing = [[p.name, list(g)] for p, g in zip(self.files, self.rows_per_group, strict=True)]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]

    def task_counts(self) -> Counter[str]:
        """Rows per task over all files (reads only the ``task`` column)."""
        counts: Counter[str] = Counter()
        for path in self.files:
            counts.update(str(t) for t in pq.read_table(path, columns=["task"])["task"].to_pylist())
        return counts

    def read_group(self, file: int, group: int) -> list[dict[str, Any]]:
        table = pq.ParquetFile(self.files[file]).read_row_group(group)
        return table.to_pylist()

    def read_rows(self, file: int, group: int, rows: Collection[int]) -> pa.Table:
        """Rows ``rows`` of one row group as Arrow, in ascending row order; the group's other
        rows are dropped as soon as it is read."""
        table = pq.ParquetFile(self.files[file]).read_row_group(group)
        if len(rows) == table.num_rows:
            return table
        return table.take(pa.array(sorted(rows), type=pa.int64()))
