"""Batch generation: the assistant turn that follows each sample's history, written resumably.

``generate_turns`` writes, for each sample, ``OUT/images/<sample_id>-<k>.png`` and one line in
``OUT/turns.jsonl``::

    {"sample_id": ..., "task": ..., "seed": ..., "parts": [{"type": "image", "path": "images/..."},
                                                           {"type": "text", "text": "..."}]}

Each sample's seed derives from the run's seed and its id, so a sample's output does not depend
on the order, the limit or an interrupted run. A line is written, flushed and synced after its
images; a rerun skips the samples already in ``turns.jsonl`` (a torn last line is cut off and
its sample written again), so a killed run resumes without losing or repeating a sample. Rows
that break the data contract go to ``OUT/rejects.jsonl`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

from synth.contract import DialogueSample, InvariantError, validate_row
from synth.shards import iter_rows, sample_files
from train.infer.load import Assets
from train.infer.session import Chat, Mode, Reply


@dataclass
class BatchSummary:
    written: int = 0
    skipped: int = 0
    """Samples already in ``turns.jsonl``."""
    rejected: int = 0


def derive_seed(seed: int, sample_id: str) -> int:
    """A sample's own seed: independent of the order and the number of samples in a run."""
    return int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()[:12], 16)


def input_files(path: Path) -> list[Path]:
    """The Parquet files of a shard directory, or the one Parquet file given."""
    if path.is_dir():
        files = sample_files(path)
        if not files:
            raise ValueError(f"{path} holds no train-*.parquet shards")
        return files
    if path.is_file() and path.suffix == ".parquet":
        return [path]
    raise ValueError(f"{path} is neither a shard directory nor a .parquet file")


def read_samples(files: list[Path]) -> Iterator[DialogueSample | InvariantError]:
    """Every row as a sample, or as the contract error that says what is wrong with it."""
    for row in iter_rows(files):
        try:
            yield validate_row(row)
        except InvariantError as err:
            yield err


def generate_turns(
    assets: Assets,
    samples: Iterable[DialogueSample | InvariantError],
    out: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    mode: Mode = "auto",
    chat_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Answer every sample's history (see the module docstring); ``limit`` counts the input rows
    handled, those already done included, so a rerun with the same limit finishes the same set."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    turns_path = out / "turns.jsonl"
    done = _finished_ids(turns_path)
    summary = BatchSummary()
    with (
        turns_path.open("a", encoding="utf-8") as turns,
        (out / "rejects.jsonl").open("a") as rejects,
    ):
        for row, item in enumerate(samples):
            if limit is not None and row >= limit:
                break
            if isinstance(item, InvariantError):
                _append(rejects, {"row": row, "sample_id": item.sample_id, "reason": str(item)})
                summary.rejected += 1
                continue
            if item.sample_id in done:
                summary.skipped += 1
                continue
            sample_seed = derive_seed(seed, item.sample_id)
            chat = Chat(assets, seed=sample_seed, **(chat_options or {}))
            chat.load(item)
            parts = _write_parts(chat.reply(mode=mode), item.sample_id, out)
            _append(
                turns,
                {
                    "sample_id": item.sample_id,
                    "task": item.task,
                    "seed": sample_seed,
                    "parts": parts,
                },
            )
            done.add(item.sample_id)
            summary.written += 1
            if progress is not None:
                progress(f"{item.sample_id} ({item.task}): {_describe(parts)}")
    return summary


def _write_parts(reply: Reply, sample_id: str, out: Path) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    drawn = iter(reply.images)
    for part in reply.turn.parts:
        if part.type == "text":
            parts.append({"type": "text", "text": part.text})
            continue
        name = f"images/{sample_id}-{len(parts)}.png"
        save_png(next(drawn), out / name)
        parts.append({"type": "image", "path": name})
    return parts


def _finished_ids(path: Path) -> set[str]:
    """Sample ids with a complete line in ``turns.jsonl``; a torn last line is cut off."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    return {json.loads(line)["sample_id"] for line in data.decode("utf-8").splitlines() if line}


def _append(f: IO[str], record: dict[str, Any]) -> None:
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def save_png(picture: Image.Image, path: Path) -> None:
    """Written under a temporary name, then renamed: a file there is always a whole PNG."""
    tmp = path.with_name(path.name + ".tmp")
    picture.save(tmp, format="PNG")
    os.replace(tmp, path)


def _describe(parts: list[dict[str, Any]]) -> str:
    return " + ".join(
        p["path"] if p["type"] == "image" else f"text ({len(p['text'])} chars)" for p in parts
    )
