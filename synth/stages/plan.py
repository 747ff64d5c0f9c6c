"""Deterministic, streaming work plans: what each stage builds, numbered 0..N-1.

A plan is a generator of work items (or of ``Reject``s for source rows that cannot be used,
so they land in the rejects table exactly once). It is a pure function of the inputs, the seed
and the config: every shard of a run and every resumed run computes the same sequence, and a
shard takes ``items[shard_index::num_shards]`` (the one sharding rule). ``limit`` cuts the plan
before sharding, so the shards of a limited run still add up to the limited unsharded run.

Stage a assigns tasks to source rows. Sources are read round-robin, one row from each in turn,
so any prefix of the plan (``--limit``) mixes every kind. Each row picks one of the tasks its
kind can feed (``RECIPES``) with probability proportional to ``weight(task) * rows(task)``:
a two-row task consumes two rows per sample, so within a kind the *samples* follow the mix. The
overall share of each task also follows how many rows of each kind the sources hold. A row
that picks a two-row task waits for the next row of its source that picks the same task; an
unpaired row at the end of a source falls back to a one-row task of its kind. vqa and chat
sources feed no stage-a task; they are read too, so their bad rows are rejected here, once.
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
    """A stage-a task built from ``rows`` rows of one source ``kind``, if ``usable(row)``."""

    task: str
    kind: str
    rows: int = 1
    usable: Callable[[Any], bool] = lambda row: True


def _has_source_caption(row: Any) -> bool:
    return bool(row.source_caption)


# What each source kind can feed in stage a (paper section 3.3). vqa and chat rows feed no
# stage-a task: they are stage-b distractor material.
RECIPES: tuple[Recipe, ...] = (
    Recipe("t_i_0_0", "t2i"),
    Recipe("t_i_t1_1", "t2i"),
    Recipe("ti_i_0_0", "edit"),
    # Turn 1 asks for the source image with caption2query, so the edit row needs its caption.
    Recipe("t_i_i1_1", "edit", usable=_has_source_caption),
    Recipe("t_i_0_0", "subject"),
    Recipe("t_i_t1_1", "subject"),
    # t_i_in_1 and ti_i_i1_1 answer "draw them together" with an image of both subjects: they
    # need a composition target (two subject images plus the image of both, as subject-driven
    # datasets hold). A subject row has one image and one caption, so no source kind feeds
    # them yet; stage_a builds them from (first, second, target) rows once one does.
)
STAGE_A_KINDS = frozenset(r.kind for r in RECIPES)


@dataclass(frozen=True)
class WorkItem:
    """One stage-a sample to build: a task and the source rows it is made of."""

    task: str
    rows: tuple[Any, ...]

    @property
    def refs(self) -> list[str]:
        return [f"{r.source}:{r.row_id}" for r in self.rows]

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
                yield from planner.finish()
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
        self.waiting: dict[str, Any] = {}  # task -> row waiting for its partner

    def step(self) -> list[WorkItem | Reject] | None:
        """Plan the next row: [] while it waits for a partner; None at the end of the source."""
        row = next(self.rows, None)
        if row is None:
            return None
        if isinstance(row, Reject):
            return [row]
        if self.kind not in STAGE_A_KINDS:
            return []  # distractor material for stage b; read here only to record bad rows
        recipe = self._choose(row, self.recipes)
        if recipe is None:
            return [self._unusable(row)]
        if recipe.rows == 1:
            return [WorkItem(recipe.task, (row,))]
        partner = self.waiting.pop(recipe.task, None)
        if partner is None:
            self.waiting[recipe.task] = row
            return []
        return [WorkItem(recipe.task, (partner, row))]

    def finish(self) -> list[WorkItem | Reject]:
        out: list[WorkItem | Reject] = []
        for row in self.waiting.values():
            single = [r for r in self.recipes if r.rows == 1]
            recipe = self._choose(row, single)
            out.append(WorkItem(recipe.task, (row,)) if recipe else self._unusable(row, True))
        self.waiting.clear()
        return out

    def _choose(self, row: Any, recipes: list[Recipe]) -> Recipe | None:
        usable = [r for r in recipes if r.usable(row)]
        if not usable:
            return None
        w = [self.weights[r.task] * r.rows for r in usable]
        return self.rng.choices(usable, weights=w)[0]

    def _unusable(self, row: Any, unpaired: bool = False) -> Reject:
        tasks = sorted({r.task for r in RECIPES if r.kind == self.kind})
        why = (
            "it was left without a partner for a two-row task and no one-row task is enabled"
            if unpaired
            else f"no task enabled by the mix can use it (tasks of kind {self.kind}: {tasks}; "
            "t_i_i1_1 also needs a source caption)"
        )
        return Reject(
            stage="a",
            reason="plan:no-task-for-row",
            detail=f"{self.kind} row {row.row_id} of source {self.name!r}: {why}",
            source=self.name,
            source_row=str(row.row_id),
        )


def plan_from_samples(in_dir: Path) -> Iterator[DialogueSample]:
    """Stages b and c: one work item per input sample, in the input's file and row order."""
    return iter_samples(in_dir)
