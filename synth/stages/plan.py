"""Deterministic, streaming work plans: what each stage builds, numbered 0..N-1.

A plan is a generator of work items (or of ``Reject``s for source rows that cannot be used,
so they land in the rejects table exactly once). It is a pure function of the inputs, the seed
and the config: every shard of a run and every resumed run computes the same sequence, and a
shard takes ``items[shard_index::num_shards]`` (the one sharding rule). ``limit`` cuts the plan
before sharding, so the shards of a limited run still add up to the limited unsharded run.

Stage a assigns tasks to source rows. Sources are read round-robin, one row from each in turn,
so any prefix of the plan (``--limit``) mixes every kind. Each row picks one of the tasks its
kind can feed (``RECIPES``) with probability proportional to ``weight(task)``, so within a kind
the samples follow the mix; the overall share of each task also follows how many rows of each
kind the sources hold. Every task is built from one row: the two-subject tasks read a compose
row, which holds both subjects and the image of them together. vqa and chat sources feed no
stage-a task; they are read too, so their bad rows are rejected here, once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from synth.contract import DialogueSample, Reject
from synth.shards import iter_samples
from synth.sources import EditChain

T = TypeVar("T")


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any JSON-able parts: stable across processes and Python versions
    (``hash()`` is salted per process, so it is never used for this)."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def item_rng(seed: int, stage: str, key: str) -> random.Random:
    """The RNG of one work item: its result never depends on scheduling or on other items."""
    return random.Random(derive_seed(seed, stage, key))


def shard_items(
    items: Iterable[T], *, num_shards: int, shard_index: int, limit: int | None = None
) -> Iterator[T]:
    """``items[:limit][shard_index::num_shards]``, streamed."""
    return islice(islice(items, limit), shard_index, None, num_shards)


@dataclass(frozen=True)
class Recipe:
    """A stage-a task built from one row of source ``kind``, if ``usable(row)``."""

    task: str
    kind: str
    usable: Callable[[Any], bool] = lambda row: True


def _has_source_caption(row: Any) -> bool:
    return bool(row.source_caption)


def _is_chain(row: Any) -> bool:
    return isinstance(row, EditChain)


def _single_edit(row: Any) -> bool:
    return not _is_chain(row)


def _chain_or_captioned(row: Any) -> bool:
    # A chain's first image is uploaded, and every later edit works on the turn before's
    # output: no caption needed. A single edit generates its source image from its caption.
    return _is_chain(row) or _has_source_caption(row)


# What each source kind can feed in stage a (paper section 3.3). vqa and chat rows feed no
# stage-a task: they are stage-b distractor material.
RECIPES: tuple[Recipe, ...] = (
    Recipe("t_i_0_0", "t2i"),
    Recipe("t_i_t1_1", "t2i"),
    Recipe("ti_i_0_0", "edit", usable=_single_edit),
    # Turn 1 asks for the source image with caption2query, so the edit row needs its caption;
    # an edit chain (real consecutive edits of one session) is a multi-edit t_i_i1_1 as it is.
    Recipe("t_i_i1_1", "edit", usable=_chain_or_captioned),
    Recipe("t_i_0_0", "subject"),
    Recipe("t_i_t1_1", "subject"),
    # "Draw them together" is answered with an image of both subjects: only a compose row,
    # two subjects plus the image of the two, can feed these.
    Recipe("t_i_in_1", "compose"),
    Recipe("ti_i_i1_1", "compose"),
)
STAGE_A_KINDS = frozenset(r.kind for r in RECIPES)


@dataclass(frozen=True)
class WorkItem:
    """One stage-a sample to build: a task and the source row it is made of."""

    task: str
    row: Any

    @property
    def refs(self) -> list[str]:
        return [f"{self.row.source}:{self.row.row_id}"]

    @property
    def key(self) -> str:
        return "|".join([self.task, *self.refs])


def plan_stage_a(
    streams: Sequence[tuple[str, str, Iterator[Any]]],
    weights: dict[str, float],
    seed: int,
) -> Iterator[WorkItem | Reject]:
    """Work items from ``(source name, kind, rows-or-rejects)`` streams, round-robin."""
    planners = [_SourcePlanner(name, kind, rows, weights, seed) for name, kind, rows in streams]
    active = list(planners)
    while active:
        still = []
        for planner in active:
            produced = planner.step()
            if produced is None:
                continue
            yield from produced
            still.append(planner)
        active = still


class _SourcePlanner:
    def __init__(
        self, name: str, kind: str, rows: Iterator[Any], weights: dict[str, float], seed: int
    ):
        self.name, self.kind, self.rows = name, kind, rows
        self.recipes = [r for r in RECIPES if r.kind == kind and weights.get(r.task, 0) > 0]
        self.weights = weights
        self.rng = random.Random(derive_seed(seed, "plan-a", name))

    def step(self) -> list[WorkItem | Reject] | None:
        """Plan the next row: [] for distractor material; None at the end of the source."""
        row = next(self.rows, None)
        if row is None:
            return None
        if isinstance(row, Reject):
            return [row]
        if self.kind not in STAGE_A_KINDS:
            return []  # distractor material for stage b; read here only to record bad rows
        usable = [r for r in self.recipes if r.usable(row)]
        if not usable:
            return [self._unusable(row)]
        recipe = self.rng.choices(usable, weights=[self.weights[r.task] for r in usable])[0]
        return [WorkItem(recipe.task, row)]

    def _unusable(self, row: Any) -> Reject:
        tasks = sorted({r.task for r in RECIPES if r.kind == self.kind})
        return Reject(
            stage="a",
            reason="plan:no-task-for-row",
            detail=f"{self.kind} row {row.row_id} of source {self.name!r}: no task enabled by "
            f"the mix can use it (tasks of kind {self.kind}: {tasks}; t_i_i1_1 takes an edit "
            "chain or an edit with a source caption)",
            source=self.name,
            source_row=str(row.row_id),
        )


def plan_from_samples(in_dirs: Sequence[Path]) -> Iterator[DialogueSample]:
    """Stages b and c: one work item per input sample, directory by directory in file and row
    order. A sample met again (stage b passes depth-0 samples through unchanged, so stage c over
    both the stage-a and stage-b output sees them twice) is taken once."""
    seen: set[str] = set()
    for in_dir in in_dirs:
        for sample in iter_samples(in_dir):
            if sample.sample_id not in seen:
                seen.add(sample.sample_id)
                yield sample
