"""The evaluation set: which dialogues are probed, read once, with their history variants.

Selection reads only the ``sample_id`` and ``task`` columns of every shard, keeps the held-out
ids (``train.data.sampling.held_out``) when a holdout fraction is given, and takes per task the
``max_per_task`` ids that rank first under a seeded hash of the id: the same dialogues whatever
the file order, rank count or training step. Only the row groups holding them are then read
and validated; a row that breaks the contract or whose image header is unreadable is counted
under its reason and left out. The auxiliary ``vqa`` and ``chat`` samples carry no final image
turn and are not probed.

Donors for the replaced history come from the held-out pool, not only from the probed
dialogues: besides them, the first ``DONOR_ROWS_PER_TASK`` ranked ids of every task (the
auxiliary ones and those a ``tasks`` filter leaves out included) are read as donor material, so
a small or filtered probe set still finds an unrelated turn of each kind.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from synth.contract import AUX_TASKS, DialogueSample, InvariantError, validate_row
from train.data.sampling import held_out
from train.data.serialize import DialoguePlan, plan_dialogue
from train.data.source import resolve_files
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms
from train.eval.variants import VARIANTS, DonorPool, HistoryVariants, Variant

Rows = dict[Path, dict[int, list[int]]]
"""file -> row group -> row indices."""


@dataclass(frozen=True)
class Dialogue:
    """One probed dialogue: its variants and their token layouts."""

    variants: HistoryVariants
    plans: dict[Variant, DialoguePlan]

    @property
    def sample(self) -> DialogueSample:
        return self.variants.true


@dataclass
class EvalSet:
    dialogues: list[Dialogue]
    counts: dict[str, int] = field(default_factory=dict)
    """Rows seen, eligible (held out, or all without a holdout), probed, every reason a row was
    left out, and why some dialogues have no replaced variant."""


DONOR_ROWS_PER_TASK = 16


def _rank(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()


def select_rows(
    files: Sequence[Path],
    holdout: float | None,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] = (),
) -> tuple[Rows, Rows, Counter[str]]:
    """The rows of the probed dialogues and of the extra donor dialogues (each as file -> row
    group -> row indices), and the counts."""
    counts: Counter[str] = Counter()
    ranked: dict[str, list[tuple[bytes, Path, int, int]]] = defaultdict(list)
    donor_ranked: dict[str, list[tuple[bytes, Path, int, int]]] = defaultdict(list)
    seen: set[str] = set()
    for path in files:
        meta = pq.ParquetFile(path)
        for g in range(meta.metadata.num_row_groups):
            cols = meta.read_row_group(g, columns=["sample_id", "task"]).to_pydict()
            for r, (sid, task) in enumerate(zip(cols["sample_id"], cols["task"], strict=True)):
                counts["rows"] += 1
                sid, task = str(sid), str(task)
                if holdout is not None and not held_out(sid, holdout):
                    continue
                counts["eligible"] += 1
                if sid in seen:
                    counts["skipped_duplicate_id"] += 1
                    continue
                seen.add(sid)
                key = (_rank(seed, sid), path, g, r)
                if task in AUX_TASKS:
                    counts["skipped_aux"] += 1
                    donor_ranked[task].append(key)
                elif tasks and task not in tasks:
                    counts["skipped_other_task"] += 1
                    donor_ranked[task].append(key)
                else:
                    ranked[task].append(key)
    chosen: Rows = defaultdict(lambda: defaultdict(list))
    donors: Rows = defaultdict(lambda: defaultdict(list))
    for task in sorted(ranked):
        ordered = sorted(ranked[task])
        for _, path, g, r in ordered[:max_per_task]:
            chosen[path][g].append(r)
        donor_ranked[task] = ordered[max_per_task:]
    for task in sorted(donor_ranked):
        for _, path, g, r in sorted(donor_ranked[task])[:DONOR_ROWS_PER_TASK]:
            donors[path][g].append(r)
    return chosen, donors, counts


def turn_tokens(plan: DialoguePlan) -> list[int]:
    """Tokens of each turn as training lays it out."""
    tokens = [0] * len(plan.sample.turns)
    for b in plan.blocks:
        tokens[b.turn] += b.stop - b.start
    return tokens


def _read(
    rows: Rows,
    tokenizer: ChatTokenizer,
    transforms: Transforms,
    plans: dict[str, DialoguePlan],
    counts: Counter[str],
) -> list[DialogueSample]:
    """Validate and plan the given rows (plans into ``plans``); bad rows counted by reason."""
    samples: list[DialogueSample] = []
    for row in _iter_rows(rows):
        try:
            sample = validate_row(row)
            plans[sample.sample_id] = plan_dialogue(sample, tokenizer, transforms)
        except InvariantError as err:
            counts[f"skipped_invariant:{err.invariant}"] += 1
            continue
        except (OSError, ValueError, Image.DecompressionBombError):
            counts["skipped_image_decode"] += 1
            continue
        samples.append(sample)
    return samples


def _iter_rows(rows: Rows) -> Iterator[dict[str, Any]]:
    for path in sorted(rows):
        parquet = pq.ParquetFile(path)
        for g in sorted(rows[path]):
            table = parquet.read_row_group(g).to_pylist()
            for r in rows[path][g]:
                yield table[r]


def select_samples(
    data: Sequence[str | Path],
    *,
    holdout: float | None,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] = (),
) -> tuple[list[DialogueSample], Counter[str]]:
    """The dialogues the probes would choose, validated (not planned), in the probes' order
    (task, then the seeded rank), and the counts. A smaller ``max_per_task`` with the same seed
    chooses a prefix of each task's list: the generation report's dialogues are probed ones."""
    chosen, _, counts = select_rows(resolve_files(data), holdout, max_per_task, seed, tasks)
    samples: list[DialogueSample] = []
    for row in _iter_rows(chosen):
        try:
            samples.append(validate_row(row))
        except InvariantError as err:
            counts[f"skipped_invariant:{err.invariant}"] += 1
    samples.sort(key=lambda s: (s.task, _rank(seed, s.sample_id)))
    return samples, counts


def load_eval_set(
    data: Sequence[str | Path],
    tokenizer: ChatTokenizer,
    transforms: Transforms,
    *,
    holdout: float | None,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] = (),
) -> EvalSet:
    """Read, validate and plan the chosen dialogues, then build their history variants."""
    chosen, donor_rows, counts = select_rows(
        resolve_files(data), holdout, max_per_task, seed, tasks
    )
    plans: dict[str, DialoguePlan] = {}
    samples = _read(chosen, tokenizer, transforms, plans, counts)
    donors = _read(donor_rows, tokenizer, transforms, plans, Counter())
    samples.sort(key=lambda s: (s.task, _rank(seed, s.sample_id)))
    donors.sort(key=lambda s: (s.task, _rank(seed, s.sample_id)))
    pool = DonorPool(samples + donors, lambda s: turn_tokens(plans[s.sample_id]), seed=seed)
    dialogues = []
    for sample in samples:
        variants = pool.variants(sample)
        if variants.missing:
            counts[f"no_replaced:{variants.missing}"] += 1
        present = variants.present()
        dialogues.append(
            Dialogue(
                variants,
                {
                    v: plans[sample.sample_id]
                    if v == "true"
                    else plan_dialogue(present[v], tokenizer, transforms)
                    for v in VARIANTS
                    if v in present
                },
            )
        )
    counts["dialogues"] = len(dialogues)
    return EvalSet(dialogues, {k: v for k, v in sorted(counts.items()) if v})
