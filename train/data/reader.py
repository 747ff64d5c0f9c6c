"""One reader's stream: its row groups -> kept, valid dialogues -> overflow buffer -> packs.

A reader is one (rank, worker) pair. Its whole state is small and plain (JSON-able):

    epoch, group, row     the next row to read: ``row`` of the ``group``-th of its row groups
    buffer                addresses (epoch, file, row group, row) of the dialogues held back
    stats                 counters

A dialogue's serialization is a pure function of its address and the seed (the row's own RNG
draws the keep decision and the timesteps), so a reader restored from a snapshot re-reads the
buffered rows and continues with exactly the packs it would have produced.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from synth.contract import InvariantError, validate_row
from train.batch import PackedBatch
from train.data.config import DataConfig
from train.data.pack import PackBuffer, pack
from train.data.sampling import (
    ACCEPT,
    ROW_ORDER,
    SERIALIZE,
    epoch_order,
    held_out,
    rng_for,
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
        state = state or {}
        self.epoch, self.group, self.row = (state.get(k, 0) for k in ("epoch", "group", "row"))
        self.stats = LoaderStats(**state.get("stats", {}))
        cache: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for epoch, f, g, r in state.get("buffer", []):
            rows = cache.setdefault((f, g), source.read_group(f, g))
            held = self._admit(rows[r], (epoch, f, g, r), count=False)
            assert held is not None, f"buffered row {(epoch, f, g, r)} no longer serializes"
            self.buffer.items.append(held)

    def snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "group": self.group,
            "row": self.row,
            "buffer": [list(h.address) for h in self.buffer.items],
            "stats": self.stats.as_dict(),
        }

    def _groups(self, epoch: int) -> list[tuple[int, int]]:
        groups = self.source.row_groups
        order = epoch_order(len(groups), self.cfg.seed, epoch, self.cfg.shuffle)
        return stride([groups[i] for i in order], self.reader, self.readers)

    def __iter__(self) -> Iterator[PackedBatch]:
        cfg = self.cfg
        while cfg.epochs is None or self.epoch < cfg.epochs:
            admitted, whole_epoch = 0, self.group == 0 and self.row == 0
            groups = self._groups(self.epoch)
            while self.group < len(groups):
                f, g = groups[self.group]
                rows = self.source.read_group(f, g)
                order = list(range(len(rows)))
                if cfg.shuffle:
                    rng_for(cfg.seed, ROW_ORDER, self.epoch, f, g).shuffle(order)
                while self.row < len(rows):
                    r = order[self.row]
                    self.row += 1
                    held = self._admit(rows[r], (self.epoch, f, g, r), count=True)
                    if held is None:
                        continue
                    admitted += 1
                    chosen = self.buffer.push(held)
                    if chosen is not None:
                        yield self._emit(chosen)
                self.group, self.row = self.group + 1, 0
            if whole_epoch and admitted == 0 and not self.buffer.items:
                raise ValueError(
                    f"reader {self.reader}/{self.readers} kept no dialogue in epoch {self.epoch} "
                    f"({self.stats.as_dict()}); check task_weights, max_dialogue_tokens and the data"
                )
            self.epoch, self.group = self.epoch + 1, 0
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
