"""Which rows a reader reads, which of them it keeps, and the seeded randomness of each row.

Sharding is one rule (STYLE 5), over units of (row group, rows strided inside it): every row group,
in a seeded per-epoch order, is cut into ``k`` parts, part ``j`` holding the rows
``order[j::k]`` of its per-epoch row order (a group of ``n < k`` rows into ``n`` parts of one
row), and reader ``r`` of ``R`` reads ``units[r::R]``. A reader is one (data-parallel rank,
dataloader worker) pair: ``r = rank * workers + worker``, ``R = world * workers``. ``k`` is the
smallest that gives every reader a unit; with at least as many row groups as readers it is 1 and
the rule is ``row_groups[r::R]``. Below that, rows are strided across the readers that share a
group: each reads the group and keeps its part, so no reader is ever empty while there are at
least as many rows as readers. A reader holds one row group at a time (the writer bounds its
bytes), never the whole data.

Task weights act per row, by acceptance: a row of task ``t`` is kept with probability ``p_t``
drawn from the row's own seeded RNG, so the decision is a pure function of (seed, epoch, row)
and resuming needs no sampler state.

- ``mixture`` (default, BAGEL's group weights): the kept stream's task proportions are
  ``w_t / sum(w)``. With ``n_t`` rows of task ``t`` in the data, ``p_t`` is proportional to
  ``w_t / n_t``, scaled so the largest is 1 (the scarcest task relative to its weight is read
  in full, the others subsampled).
- ``keep``: ``p_t = w_t / max(w)``: a weight is the fraction of the task's rows kept per epoch,
  so the stream's mix is the data's mix reweighted.

Held-out split: ``held_out(sample_id, fraction)`` puts a fixed ``fraction`` of sample ids aside
for evaluation. It reads the id alone, so the trainer (``DataConfig.holdout``: never trains on
them) and ``python -m train eval --holdout`` (evaluates exactly them) agree whatever the files,
ranks or seed.

Stage 1 (paper 4.1): uniform over the multi-turn task categories. Stage 2 (annealing):
understanding Q&A 0.25, text-only chat 0.15, single-turn text-to-image (``t_i_0_0``) 0.5,
editing (``ti_i_0_0``) 1.0, every other task of the taxonomy 0.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from synth.contract import AUX_TASKS
from taxonomy import TASKS

T = TypeVar("T")

SINGLE_TURN_T2I = "t_i_0_0"
SINGLE_TURN_EDIT = "ti_i_0_0"


def stage1_task_weights() -> dict[str, float]:
    """Conversational tuning: every task of the taxonomy equally; no Q&A or chat."""
    return {**{name: 1.0 for name in TASKS}, **{aux: 0.0 for aux in AUX_TASKS}}


def stage2_task_weights() -> dict[str, float]:
    """Annealing (paper section 4.1)."""
    weights = {name: 0.1 for name in TASKS}
    weights.update({SINGLE_TURN_T2I: 0.5, SINGLE_TURN_EDIT: 1.0, "vqa": 0.25, "chat": 0.15})
    return weights


def acceptance(
    weights: Mapping[str, float],
    counts: Mapping[str, int],
    mode: Literal["mixture", "keep"],
) -> dict[str, float]:
    """Probability of keeping a row, per task. Raises when the data holds a task of the
    taxonomy (or an auxiliary task) that ``weights`` does not mention."""
    known = set(TASKS) | set(AUX_TASKS)
    unweighted = sorted(t for t in counts if t in known and t not in weights)
    if unweighted:
        raise ValueError(
            f"the data holds task(s) {unweighted} that task_weights does not mention; give "
            "them a weight (0 drops them)"
        )
    if mode == "keep":
        top = max(weights.values())
        return {t: w / top for t, w in weights.items()}
    present = {t: w / counts[t] for t, w in weights.items() if counts.get(t, 0) > 0 and w > 0}
    if not present:
        raise ValueError(
            f"no task with a positive weight occurs in the data (data: {dict(counts)})"
        )
    top = max(present.values())
    return {t: present.get(t, 0.0) / top for t in weights}


def stride(items: Sequence[T], reader: int, readers: int) -> list[T]:
    if not 0 <= reader < readers:
        raise ValueError(f"reader {reader} is not in [0, {readers})")
    return list(items[reader::readers])


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order of ``n`` row groups in ``epoch`` (identical on every rank)."""
    if not shuffle:
        return list(range(n))
    return [int(i) for i in rng_for(seed, GROUP_ORDER, epoch).permutation(n)]


@dataclass(frozen=True)
class Unit:
    """Rows ``order[part::parts]`` of row group ``group`` of file ``file`` (``order``: the group's
    row order in the epoch, see ``row_order``)."""

    file: int
    group: int
    rows: int  # in the whole row group
    part: int
    parts: int


def parts_per_group(rows_per_group: Sequence[int], readers: int) -> int:
    """The smallest ``k`` that cuts the row groups into at least ``readers`` nonempty units.

    A group of ``n`` rows gives ``min(k, n)`` units, so ``k`` exists exactly when there are at
    least as many rows as readers (the caller checks)."""
    assert sum(rows_per_group) >= readers > 0, (sum(rows_per_group), readers)
    k = 1
    while sum(min(k, n) for n in rows_per_group) < readers:
        k += 1
    return k


def epoch_units(
    groups: Sequence[tuple[int, int, int]], parts: int, seed: int, epoch: int, shuffle: bool
) -> list[Unit]:
    """Every unit of ``epoch``: ``groups`` are (file, group, rows), taken in the epoch's order,
    each cut into ``min(parts, rows)`` units (none for an empty group)."""
    order = epoch_order(len(groups), seed, epoch, shuffle)
    return [
        Unit(f, g, n, j, min(parts, n))
        for f, g, n in (groups[i] for i in order)
        for j in range(min(parts, n))
    ]


def row_order(unit: Unit, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The rows of ``unit``, in the order its reader reads them."""
    order = list(range(unit.rows))
    if shuffle:
        rng_for(seed, ROW_ORDER, epoch, unit.file, unit.group).shuffle(order)
    return order[unit.part :: unit.parts]


# What a generator is for; nonzero and first, because SeedSequence ignores trailing zeros
# ([s, 1] and [s, 1, 0] give the same stream), so keys of one purpose always have one length.
ACCEPT, SERIALIZE, ROW_ORDER, GROUP_ORDER = 1, 2, 3, 4


def rng_for(seed: int, purpose: int, *key: int) -> np.random.Generator:
    """An independent generator per (purpose, key), e.g. (SERIALIZE, epoch, file, group, row)."""
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, *key]))


def held_out(sample_id: str, fraction: float) -> bool:
    """Whether ``sample_id`` falls in the held-out ``fraction`` of all ids (a hash, no state)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(b"chatumm-holdout\0" + sample_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64
