"""One reader's stream: its row groups -> kept, valid dialogues -> overflow buffer -> packs.

A reader is one (rank, worker) pair; it reads its units (``train.data.sampling``: whole row
groups, or strided parts of them when there are fewer row groups than readers) one at a time,
holding the unit's rows as Arrow and making each a Python row only when it reads it. Its whole
state is small and plain (JSON-able):

    epoch, unit, row      the next row to read: the ``row``-th of the ``unit``-th of its units
    buffer                addresses (epoch, file, row group, row) of the dialogues held back
    stats                 counters

A dialogue's serialization is a pure function of its address and the seed (the row's own RNG
draws the keep decision and the timesteps), so a reader restored from a snapshot re-reads the
buffered rows and continues with exactly the packs it would have produced.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
from PIL import Image

from synth.contract import InvariantError, validate_row
from train.batch import PackedBatch
from train.data.config import DataConfig
from train.data.pack import PackBuffer, pack
from train.data.sampling import (
    ACCEPT,
    SERIALIZE,
    Unit,
    epoch_units,
    held_out,
    parts_per_group,
    rng_for,
    row_order,
    stride,
)
from train.data.serialize import DialoguePlan, materialize, plan_dialogue
from train.data.source import Source
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms

log = logging.getLogger(__name__)
Address = tuple[int, int, int, int]  # epoch, file, row group, row
MAX_EXAMPLES = 16


@dataclass
class LoaderStats:
    rows_read: int = 0
    sampled_out: int = 0
    held_out: int = 0
    too_long: int = 0
    corrupt: dict[str, int] = field(default_factory=dict)
    corrupt_examples: list[str] = field(default_factory=list)
    dialogues: int = 0
    packs: int = 0
    real_tokens: int = 0
    capacity_tokens: int = 0

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / capacity over every pack so far."""
        return self.real_tokens / self.capacity_tokens if self.capacity_tokens else 0.0

    def count_corrupt(self, reason: str, where: str, detail: str) -> None:
        self.corrupt[reason] = self.corrupt.get(reason, 0) + 1
        if len(self.corrupt_examples) < MAX_EXAMPLES:
            self.corrupt_examples.append(f"{where}: {reason}: {detail}"[:500])
        log.warning("skipping corrupt row %s: %s: %s", where, reason, detail)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def merged(cls, many: list[LoaderStats]) -> LoaderStats:
        total = cls()
        corrupt: Counter[str] = Counter()
        for s in many:
            for name in ("rows_read", "sampled_out", "held_out", "too_long", "dialogues", "packs"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.real_tokens += s.real_tokens
            total.capacity_tokens += s.capacity_tokens
            corrupt.update(s.corrupt)
            total.corrupt_examples += s.corrupt_examples
        total.corrupt = dict(corrupt)
        total.corrupt_examples = total.corrupt_examples[:MAX_EXAMPLES]
        return total


@dataclass(frozen=True)
class _Held:
    address: Address
    plan: DialoguePlan


class _Rows:
    """Rows of one row group, read as Arrow when the first is asked for (a reader resumed at
    the end of a unit reads nothing); each becomes a Python row when it is asked for."""

    def __init__(self, source: Source, file: int, group: int, rows: Sequence[int]):
        self.source, self.file, self.group = source, file, group
        self.index = {r: i for i, r in enumerate(sorted(rows))}

    @cached_property
    def table(self) -> pa.Table:
        return self.source.read_rows(self.file, self.group, list(self.index))

    def __getitem__(self, row: int) -> dict[str, Any]:
        return self.table.slice(self.index[row], 1).to_pylist()[0]


class ReaderStream:
    """Packs from reader ``reader`` of ``readers``; ``snapshot()`` after each one resumes it."""

    def __init__(
        self,
        source: Source,
        cfg: DataConfig,
        tokenizer: ChatTokenizer,
        accept: dict[str, float] | None,
        reader: int,
        readers: int,
        state: dict[str, Any] | None = None,
    ):
        self.source, self.cfg, self.tokenizer, self.accept = source, cfg, tokenizer, accept
        self.reader, self.readers = reader, readers
        self.transforms = Transforms.from_config(cfg)
        self.buffer: PackBuffer[_Held] = PackBuffer(
            cfg.pack_tokens, cfg.buffer_size, lambda h: h.plan.num_tokens
        )
        self.parts = parts_per_group([n for _, _, n in source.sized_groups], readers)
        self._drawn_out = 0  # rows of this epoch dropped by a task weight's draw (p > 0)
        state = state or {}
        self.epoch, self.unit, self.row = (state.get(k, 0) for k in ("epoch", "unit", "row"))
        self.stats = LoaderStats(**state.get("stats", {}))
        buffered: list[Address] = [(e, f, g, r) for e, f, g, r in state.get("buffer", [])]
        wanted: dict[tuple[int, int], set[int]] = defaultdict(set)
        for _, f, g, r in buffered:
            wanted[f, g].add(r)
        rows = {(f, g): _Rows(source, f, g, sorted(wanted[f, g])) for f, g in wanted}
        for epoch, f, g, r in buffered:
            held = self._admit(rows[f, g][r], (epoch, f, g, r), count=False)
            assert held is not None, f"buffered row {(epoch, f, g, r)} no longer serializes"
            self.buffer.items.append(held)

    def snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "unit": self.unit,
            "row": self.row,
            "buffer": [list(h.address) for h in self.buffer.items],
            "stats": self.stats.as_dict(),
        }

    def _units(self, epoch: int) -> list[Unit]:
        cfg = self.cfg
        units = epoch_units(self.source.sized_groups, self.parts, cfg.seed, epoch, cfg.shuffle)
        return stride(units, self.reader, self.readers)

    def __iter__(self) -> Iterator[PackedBatch]:
        cfg = self.cfg
        while cfg.epochs is None or self.epoch < cfg.epochs:
            # A reader that kept nothing in a whole epoch would loop forever; rows dropped only by
            # the draw of a task weight could be kept next epoch, so they do not count as hopeless.
            whole_epoch = self.unit == 0 and self.row == 0
            admitted = self._drawn_out = 0
            units = self._units(self.epoch)
            while self.unit < len(units):
                unit = units[self.unit]
                order = row_order(unit, cfg.seed, self.epoch, cfg.shuffle)
                rows = _Rows(self.source, unit.file, unit.group, order[self.row :])
                while self.row < len(order):
                    r = order[self.row]
                    self.row += 1
                    address = (self.epoch, unit.file, unit.group, r)
                    held = self._admit(rows[r], address, count=True)
                    if held is None:
                        continue
                    admitted += 1
                    chosen = self.buffer.push(held)
                    if chosen is not None:
                        yield self._emit(chosen)
                self.unit, self.row = self.unit + 1, 0
            if whole_epoch and admitted == 0 and not self._drawn_out and not self.buffer.items:
                raise ValueError(
                    f"reader {self.reader}/{self.readers} kept no dialogue in epoch {self.epoch} "
                    f"({self.stats.as_dict()}); check task_weights, max_dialogue_tokens and the data"
                )
            self.epoch, self.unit = self.epoch + 1, 0
        while self.buffer.items:
            yield self._emit(self.buffer.take())

    def _admit(self, row: dict[str, Any], address: Address, count: bool) -> _Held | None:
        """The row's plan if it is kept, valid and fits; otherwise count why not."""
        epoch, f, g, r = address
        stats = self.stats if count else LoaderStats()
        stats.rows_read += 1
        if self.cfg.holdout and held_out(str(row.get("sample_id")), self.cfg.holdout):
            stats.held_out += 1  # the evaluation split: never trained on
            return None
        if self.accept is not None:
            p = self.accept.get(str(row.get("task")))
            if p is not None and rng_for(self.cfg.seed, ACCEPT, epoch, f, g, r).random() >= p:
                stats.sampled_out += 1
                self._drawn_out += p > 0
                return None
        where = f"{self.source.files[f].name} group {g} row {r}"
        try:
            sample = validate_row(row)
        except InvariantError as err:
            stats.count_corrupt(f"invariant:{err.invariant}", where, str(err))
            return None
        except (KeyError, TypeError, ValueError) as err:
            stats.count_corrupt("schema", where, f"{type(err).__name__}: {err}")
            return None
        try:
            plan = plan_dialogue(sample, self.tokenizer, self.transforms)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            stats.count_corrupt("image-decode", where, f"{type(err).__name__}: {err}")
            return None
        if plan.num_tokens > self.cfg.max_dialogue_tokens:
            stats.too_long += 1
            return None
        return _Held(address, plan)

    def _emit(self, chosen: list[_Held]) -> PackedBatch:
        dialogues = []
        for held in chosen:
            epoch, f, g, r = held.address
            try:
                rng = rng_for(self.cfg.seed, SERIALIZE, epoch, f, g, r)
                dialogues.append(materialize(held.plan, self.tokenizer, self.transforms, rng))
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                where = f"{self.source.files[f].name} group {g} row {r}"
                self.stats.count_corrupt("image-decode", where, f"{type(err).__name__}: {err}")
        batch = pack(dialogues, capacity=self.cfg.pack_tokens, pad_id=self.tokenizer.special.pad)
        self.stats.dialogues += len(dialogues)
        self.stats.packs += 1
        self.stats.real_tokens += batch.real_tokens
        self.stats.capacity_tokens += batch.seq_len
        return batch
