"""Parquet shards of dialogue samples, written atomically and resumably, and read as a stream.

Layout of an output directory (``part`` is the run shard index of ``--shard-index``)::

    train-PPPPP-SSSSS.parquet    samples (the ``datasets`` "train" split)
    rejects-PPPPP-SSSSS.parquet  inputs that did not become samples, with reasons
    manifest-PPPPP.json          what is committed: shards, counts, cursor, config, versions
    .tmp-*                       files being written; hidden, so no reader ever sees them

A commit is: close and fsync the open sample file and rejects file under their hidden names,
rewrite the manifest atomically (temporary file, fsync, rename) listing them, then rename both
into place. The manifest write is the commit point: a file it lists that a kill left under its
hidden name is complete and is renamed into place by the next reader or writer (roll forward);
any other hidden file is an uncommitted leftover and is deleted by the next writer. The
manifest records the caller's *cursor*, the number of inputs whose outcomes are all committed,
so a killed run resumes by skipping exactly that many inputs: nothing is lost or written twice.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from synth.arrow_rows import record_batch
from synth.contract import REJECT_SCHEMA, DialogueSample, Reject, arrow_schema

SAMPLE_PREFIX = "train"
REJECT_PREFIX = "rejects"
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ShardConfig:
    max_rows: int = 1000
    max_bytes: int = 512 * 1024 * 1024
    # A row group closes at whichever comes first. A training reader holds one row group at a
    # time, several times its bytes at peak, and reads image rows no slower from groups of a
    # few MB (bench/results/row_groups.md): 8 MiB, a few dozen rows of real images. In rows they
    # may grow, since each row group has a fixed cost per column (a page, statistics, a
    # compressor) that small groups of text-only samples would pay per sample.
    row_group_rows: int = 256
    row_group_bytes: int = 8 * 1024 * 1024
    # Parquet pages of 64 KiB rather than pyarrow's 1 MiB: the writer's page and compression
    # buffers stay smaller, at the price of somewhat larger text-heavy shards (zstd sees less
    # of the template text repeated across prompts; image bytes do not compress).
    data_page_bytes: int = 64 * 1024


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    rows: int
    bytes: int
    counts: dict[str, int] = Field(description="rows per task (samples) or per reason (rejects)")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: int = 1
    part: int = 0
    num_parts: int = 1
    complete: bool = False
    cursor: int = Field(default=0, description="inputs whose outcomes are all committed")
    shards: list[ShardEntry] = []
    rejects: list[ShardEntry] = []
    config: dict[str, Any] = {}
    versions: dict[str, str] = {}
    summary: dict[str, Any] = {}

    @property
    def samples(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def task_counts(self) -> Counter[str]:
        return sum((Counter(s.counts) for s in self.shards), Counter())

    @property
    def reject_counts(self) -> Counter[str]:
        return sum((Counter(s.counts) for s in self.rejects), Counter())


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("chatumm", "pyarrow", "datasets", "pydantic", "openai", "google-genai", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def manifest_path(out_dir: Path, part: int) -> Path:
    return out_dir / f"manifest-{part:05d}.json"


# Leaves whose values are mostly unique (free text, ids, image bytes). Dictionary encoding them
# is wasted work: the writer fills a dictionary of every value until it overflows, then falls
# back to plain, holding the dictionary in memory meanwhile.
_FREE_TEXT_LEAVES = frozenset({"sample_id", "text", "source_row", "caption", "bytes", "path",
                               "prompt", "response", "results", "parent_id", "detail",
                               "payload", "raw_response", "seed"})  # fmt: skip


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema`` worth dictionary-encoding: every leaf but the
    free-text ones (task, role, operation, model, language and the like repeat)."""

    def leaves(name: str, path: str, type_: pa.DataType) -> list[tuple[str, str]]:
        if pa.types.is_list(type_):
            return leaves(name, f"{path}.list.element", type_.value_type)
        if pa.types.is_struct(type_):
            return [
                leaf for f in type_.fields for leaf in leaves(f.name, f"{path}.{f.name}", f.type)
            ]
        return [(name, path)]

    return [
        path
        for f in schema
        for name, path in leaves(f.name, f.name, f.type)
        if name not in _FREE_TEXT_LEAVES
    ]


def parquet_writer(path: Path, schema: pa.Schema, cfg: ShardConfig) -> pq.ParquetWriter:
    """A Parquet writer with the shards' settings (compression, dictionaries, page size)."""
    return pq.ParquetWriter(
        path,
        schema,
        compression="zstd",
        use_dictionary=dictionary_columns(schema),
        data_page_size=cfg.data_page_bytes,
    )


class _RotatingFile:
    """One Parquet file at a time, written under a hidden name and renamed when committed."""

    def __init__(self, out_dir: Path, prefix: str, part: int, schema: pa.Schema, cfg: ShardConfig):
        self.out_dir, self.prefix, self.part, self.schema, self.cfg = (
            out_dir,
            prefix,
            part,
            schema,
            cfg,
        )
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[DialogueSample | Reject] = []
        self._buffer_bytes = 0
        self._counts: Counter[str] = Counter()
        self._tmp: Path | None = None
        self.rows = 0
        self.bytes = 0

    def add(self, row: DialogueSample | Reject, key: str, nbytes: int) -> None:
        self._buffer.append(row)
        self._counts[key] += 1
        self.rows += 1
        self.bytes += nbytes
        self._buffer_bytes += nbytes
        if (
            len(self._buffer) >= self.cfg.row_group_rows
            or self._buffer_bytes >= self.cfg.row_group_bytes
        ):
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._tmp = self.out_dir / f"{_TMP_PREFIX}{self.prefix}-{self.part:05d}-open.parquet"
            self._writer = parquet_writer(self._tmp, self.schema, self.cfg)
        self._writer.write_batch(record_batch(self._buffer, self.schema))
        self._buffer = []
        self._buffer_bytes = 0

    def seal(self, seq: int) -> ShardEntry | None:
        """Close and fsync the open file under the hidden form of its final name.

        Returns None when it holds no rows. The caller commits it by listing it in the manifest,
        then renames it into place with ``_roll_forward``."""
        if self.rows == 0:
            return None
        self._flush()
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        name = f"{self.prefix}-{self.part:05d}-{seq:05d}.parquet"
        sealed = self.out_dir / f"{_TMP_PREFIX}{name}"
        os.replace(self._tmp, sealed)
        entry = ShardEntry(
            file=name, rows=self.rows, bytes=sealed.stat().st_size, counts=dict(self._counts)
        )
        self._writer, self._tmp, self._counts, self.rows, self.bytes = None, None, Counter(), 0, 0
        return entry

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


class ShardWriter:
    """Writes samples and rejects into ``out_dir``; resumes what a killed run committed.

    Usage::

        with ShardWriter(out, config=cfg_dict) as w:
            for i, item in enumerate(inputs[w.cursor:], start=w.cursor):
                w.add(sample) or w.add_reject(reject)
                w.mark(i + 1)          # every outcome of inputs < i + 1 has been added
            w.close(summary)           # marks the manifest complete
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        part: int = 0,
        num_parts: int = 1,
        config: dict[str, Any] | None = None,
        shard: ShardConfig | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = shard or ShardConfig()
        self.manifest = load_part_manifest(self.out_dir, part) or Manifest(
            part=part, num_parts=num_parts
        )
        for stale in self.out_dir.glob(f"{_TMP_PREFIX}*-{part:05d}-*"):
            stale.unlink()  # written after the last commit point: not part of committed state
        if self.manifest.num_parts != num_parts:
            raise ValueError(
                f"{self.out_dir} holds part {part} of a {self.manifest.num_parts}-way sharded run; "
                f"this run asks for {num_parts} shards: use the same --num-shards, or another --out"
            )
        self.manifest.config = config or self.manifest.config
        self.manifest.versions = package_versions()
        self.manifest.complete = False
        self._samples = _RotatingFile(self.out_dir, SAMPLE_PREFIX, part, arrow_schema(), self.cfg)
        self._rejects = _RotatingFile(self.out_dir, REJECT_PREFIX, part, REJECT_SCHEMA, self.cfg)
        self._pending_cursor = self.manifest.cursor
        self._closed = False

    @property
    def cursor(self) -> int:
        return self.manifest.cursor

    def add(self, sample: DialogueSample) -> None:
        # Images and the LLM calls' text dominate a row; the rest is a few hundred bytes.
        calls = sample.provenance.llm_calls
        nbytes = sum(len(img.data) for img in sample.images) + 1024
        nbytes += sum(len(call.prompt) + len(call.response) for call in calls)
        # The model itself is the row: record_batch reads its fields (see synth.arrow_rows).
        self._samples.add(sample, sample.task, nbytes)

    def add_reject(self, reject: Reject) -> None:
        self._rejects.add(reject, reject.reason, len(reject.payload) + len(reject.raw_response))

    @property
    def commit_due(self) -> bool:
        """Whether the next ``mark`` commits (the open samples shard is full): a caller that
        keeps a summary in the manifest refreshes it then, not at every mark."""
        return self._samples.rows >= self.cfg.max_rows or self._samples.bytes >= self.cfg.max_bytes

    def mark(self, cursor: int) -> None:
        """Record that all outcomes of the first ``cursor`` inputs were added; may commit."""
        self._pending_cursor = cursor
        if self.commit_due:
            self.commit()

    def commit(self) -> None:
        sealed = [
            (entries, entry)
            for entries, rotating in (
                (self.manifest.shards, self._samples),
                (self.manifest.rejects, self._rejects),
            )
            if (entry := rotating.seal(len(entries))) is not None
        ]
        for entries, entry in sealed:
            entries.append(entry)
        self.manifest.cursor = self._pending_cursor
        self._write_manifest()  # the commit point
        for _, entry in sealed:
            _roll_forward(self.out_dir, entry.file)
        if sealed:
            fsync_dir(self.out_dir)

    def close(self, summary: dict[str, Any] | None = None) -> Manifest:
        self.commit()
        self.manifest.summary = summary or self.manifest.summary
        self.manifest.complete = True
        self._write_manifest()
        self._closed = True
        return self.manifest

    def abort(self) -> None:
        """Drop what is not committed (the committed shards and manifest stay as they are)."""
        self._samples.abort()
        self._rejects.abort()
        self._closed = True

    def _write_manifest(self) -> None:
        atomic_write_text(
            manifest_path(self.out_dir, self.manifest.part), self.manifest.model_dump_json(indent=2)
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if not self._closed:
            if exc_type is None:
                self.close()
            else:
                self.abort()


def _roll_forward(out_dir: Path, name: str) -> bool:
    """Rename a committed file from its hidden name into place; False when it is not there."""
    hidden = out_dir / f"{_TMP_PREFIX}{name}"
    if hidden.exists():
        os.replace(hidden, out_dir / name)
        return True
    return (out_dir / name).exists()


def load_part_manifest(out_dir: Path, part: int) -> Manifest | None:
    """The committed state of one part, finishing the renames a kill may have interrupted."""
    path = manifest_path(out_dir, part)
    if not path.exists():
        return None
    manifest = Manifest.model_validate_json(path.read_text())
    missing = [
        e.file for e in (*manifest.shards, *manifest.rejects) if not _roll_forward(out_dir, e.file)
    ]
    if missing:
        raise ValueError(
            f"{out_dir}: the manifest lists {missing}, which are gone; restore them or start "
            "the run in a new --out directory"
        )
    return manifest


def read_manifest(out_dir: str | Path) -> Manifest:
    """All parts of a directory merged into one view (counts, shards, config of part 0)."""
    out = Path(out_dir)
    parts = sorted(int(p.stem.split("-")[1]) for p in out.glob("manifest-*.json"))
    manifests = [m for p in parts if (m := load_part_manifest(out, p)) is not None]
    if not manifests:
        raise FileNotFoundError(f"{out} holds no chatumm shards (no manifest-*.json)")
    merged = manifests[0].model_copy(deep=True)
    for m in manifests[1:]:
        merged.shards += m.shards
        merged.rejects += m.rejects
        merged.cursor += m.cursor
        merged.complete = merged.complete and m.complete
    return merged


def sample_files(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob(f"{SAMPLE_PREFIX}-*.parquet"))


def reject_files(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob(f"{REJECT_PREFIX}-*.parquet"))


def iter_rows(
    files: list[Path], batch_size: int = 64, columns: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream rows batch by batch; never holds more than one batch of one file in memory."""
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()


def iter_samples(out_dir: str | Path, batch_size: int = 64) -> Iterator[DialogueSample]:
    for row in iter_rows(sample_files(out_dir), batch_size):
        yield DialogueSample.from_row(row)


def iter_rejects(out_dir: str | Path, batch_size: int = 256) -> Iterator[Reject]:
    for row in iter_rows(reject_files(out_dir), batch_size):
        yield Reject.model_validate(row)
