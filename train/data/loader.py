"""``PackedLoader``: the resumable stream of ``PackedBatch`` one data-parallel rank trains on.

Readers. With ``num_workers = 0`` the rank is one reader working in-process. With ``n > 0`` it
runs ``n`` readers in torch ``DataLoader`` worker processes (prefetching ``prefetch_factor``
packs each); reader ``rank * n + w`` of ``world * n`` reads its units by the one sharding rule
of ``train.data.sampling``: ``row_groups[rank * n + w :: world * n]`` when there are at least
as many row groups as readers, rows strided inside the row groups when there are fewer. Every
reader needs a row: fewer rows than readers is refused when the loader is built, on every rank
alike, so no rank is left waiting for another.

Exact resume. Each pack travels with its reader's snapshot taken right after it was made, and
the loader records the snapshot of the last pack *consumed*, so packs prefetched but never
consumed leave no trace. The DataLoader hands out packs round-robin over its workers starting
at worker 0; the loader also records which reader is due next, and on resume physical worker
``w`` plays reader ``(w + due) % n``, so the resumed sequence continues exactly where the
interrupted one stopped. (With a finite ``epochs``, a reader that runs out early changes the
round-robin order; stream forever, ``epochs=None``, for exact multi-worker resume.)

In-process (``num_workers = 0``) is the default and the simplest: one pack of 64k tokens takes a
fraction of a second to build (bench/bench_packing.py), well under a training step; workers
are for when image decoding would show up in the step time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from train.batch import PackedBatch
from train.data.config import DataConfig
from train.data.reader import LoaderStats, ReaderStream
from train.data.sampling import acceptance
from train.data.source import Source
from train.data.tokenizer import ChatTokenizer

STATE_VERSION = 2  # 2: a reader's position is a unit (row group or a part of one)


class PackedLoader:
    def __init__(
        self,
        files_or_dirs: Sequence[str | Path] | str | Path,
        config: DataConfig,
        tokenizer: ChatTokenizer,
        dp_rank: int = 0,
        dp_world_size: int = 1,
    ):
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank {dp_rank} is not in [0, {dp_world_size})")
        self.cfg, self.tokenizer = config, tokenizer
        self.rank, self.world = dp_rank, dp_world_size
        self.source = Source.open(files_or_dirs)
        self.per_rank = max(config.num_workers, 1)
        readers = self.world * self.per_rank
        if self.source.num_rows < readers:
            raise ValueError(
                f"the data holds {self.source.num_rows} row(s), fewer than its {readers} readers "
                f"({dp_world_size} data-parallel ranks x {self.per_rank} loader workers), and "
                "each reader needs one; use fewer ranks (torchrun --nproc-per-node, grad_accum) "
                "or data.overrides.num_workers, or train on more rows"
            )
        self.accept = (
            None
            if config.task_weights is None
            else acceptance(config.task_weights, self.source.task_counts(), config.weight_mode)
        )
        self._states: list[dict[str, Any] | None] = [None] * self.per_rank
        self._due = 0

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able): resume with ``load_state_dict`` on a loader built alike."""
        return {**self._identity(), "due": self._due, "readers": list(self._states)}

    def _identity(self) -> dict[str, Any]:
        """What a saved state must agree on with the loader that loads it."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self.source.fingerprint(),
            "seed": self.cfg.seed,
            "rank": self.rank,
            "world": self.world,
            "readers_per_rank": self.per_rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self._identity()
        wrong = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if wrong:
            raise ValueError(
                "the loader state does not belong to this run (saved, current): "
                f"{wrong}; resume with the same files, seed, ranks and num_workers"
            )
        self._states = list(state["readers"])
        self._due = int(state["due"])

    @property
    def stats(self) -> LoaderStats:
        """Counters over the packs consumed so far (all readers of this rank)."""
        return LoaderStats.merged(
            [LoaderStats(**s["stats"]) for s in self._states if s is not None]
        )

    # --- iteration ---------------------------------------------------------------------------
    def _stream(self, reader: int) -> ReaderStream:
        return ReaderStream(
            self.source,
            self.cfg,
            self.tokenizer,
            self.accept,
            reader=self.rank * self.per_rank + reader,
            readers=self.world * self.per_rank,
            state=self._states[reader],
        )

    def __iter__(self) -> Iterator[PackedBatch]:
        """Continue from the current state (fresh, loaded, or where the last iterator stopped);
        use one iterator at a time."""
        if self.cfg.num_workers == 0:
            stream = self._stream(0)
            for batch in stream:
                self._states[0] = stream.snapshot()
                yield batch
            return
        loader = DataLoader(
            _Workers(self, rotation=self._due),
            batch_size=None,
            num_workers=self.cfg.num_workers,
            prefetch_factor=self.cfg.prefetch_factor,
            worker_init_fn=_one_thread,
            collate_fn=_as_is,
        )
        for reader, batch, snapshot in loader:
            self._states[reader] = snapshot
            self._due = (reader + 1) % self.per_rank
            yield batch


class _Workers(IterableDataset[tuple[int, PackedBatch, dict[str, Any]]]):
    def __init__(self, loader: PackedLoader, rotation: int):
        self.loader, self.rotation = loader, rotation

    def __iter__(self) -> Iterator[tuple[int, PackedBatch, dict[str, Any]]]:
        info = get_worker_info()
        assert info is not None, "_Workers runs inside DataLoader workers only"
        reader = (info.id + self.rotation) % info.num_workers
        stream = self.loader._stream(reader)
        for batch in stream:
            yield reader, batch, stream.snapshot()


def _as_is(item: Any) -> Any:
    # Items are (reader, PackedBatch, snapshot); the default collate would rebuild the snapshot.
    return item


def _one_thread(_: int) -> None:
    # Workers decode images with PIL; torch's intra-op threads would only oversubscribe cores.
    torch.set_num_threads(1)
