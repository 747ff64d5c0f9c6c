"""The evaluation set: which dialogues are probed, read once, with their history variants.

Selection reads only the ``sample_id`` and ``task`` columns of every shard, keeps the held-out
ids (``train.data.sampling.held_out``) when a holdout fraction is given, and takes per task the
``max_per_task`` ids that rank first under a seeded hash of the id: the same dialogues whatever
the file order, rank count or training step. Only the row groups holding them are then read
and validated; a row that breaks the contract or whose image header is unreadable is counted
under its reason and left out. The auxiliary ``vqa`` and ``chat`` samples carry no final image
turn and are not probed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from synth.contract import AUX_TASKS, DialogueSample, InvariantError, validate_row
from train.data.sampling import held_out
from train.data.serialize import DialoguePlan, plan_dialogue
from train.data.source import resolve_files
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms
from train.eval.variants import VARIANTS, DonorPool, HistoryVariants, Variant


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


def _rank(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()


def select_rows(
    files: Sequence[Path],
    holdout: float | None,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] = (),
) -> tuple[dict[Path, dict[int, list[int]]], Counter[str]]:
    """file -> row group -> row indices of the chosen dialogues (and the counts)."""
    counts: Counter[str] = Counter()
    ranked: dict[str, list[tuple[bytes, Path, int, int]]] = defaultdict(list)
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
                if task in AUX_TASKS:
                    counts["skipped_aux"] += 1
                    continue
                if tasks and task not in tasks:
                    counts["skipped_other_task"] += 1
                    continue
                if sid in seen:
                    counts["skipped_duplicate_id"] += 1
                    continue
                seen.add(sid)
                ranked[task].append((_rank(seed, sid), path, g, r))
    chosen: dict[Path, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for task in sorted(ranked):
        for _, path, g, r in sorted(ranked[task])[:max_per_task]:
            chosen[path][g].append(r)
    return chosen, counts


def turn_tokens(plan: DialoguePlan) -> list[int]:
    """Tokens of each turn as training lays it out."""
    tokens = [0] * len(plan.sample.turns)
    for b in plan.blocks:
        tokens[b.turn] += b.stop - b.start
    return tokens


def select_samples(
    data: Sequence[str | Path],
    *,
    holdout: float | None,
    max_per_task: int,
    seed: int,
    tasks: Sequence[str] = (),
) -> tuple[list[DialogueSample], Counter[str]]:
    """The chosen dialogues, validated, in report order (task, then the seeded rank), and the
    counts. A smaller ``max_per_task`` with the same seed chooses a prefix of each task's list."""
    chosen, counts = select_rows(resolve_files(data), holdout, max_per_task, seed, tasks)
    samples: list[DialogueSample] = []
    for path in sorted(chosen):
        parquet = pq.ParquetFile(path)
        for g in sorted(chosen[path]):
            rows = parquet.read_row_group(g).to_pylist()
            for r in chosen[path][g]:
                try:
                    samples.append(validate_row(rows[r]))
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
    chosen, counts = select_samples(
        data, holdout=holdout, max_per_task=max_per_task, seed=seed, tasks=tasks
    )
    samples: list[DialogueSample] = []
    plans: dict[str, DialoguePlan] = {}
    for sample in chosen:
        try:
            plans[sample.sample_id] = plan_dialogue(sample, tokenizer, transforms)
        except InvariantError as err:
            counts[f"skipped_invariant:{err.invariant}"] += 1
            continue
        except (OSError, ValueError, Image.DecompressionBombError):
            counts["skipped_image_decode"] += 1
            continue
        samples.append(sample)
    pool = DonorPool(samples, lambda s: turn_tokens(plans[s.sample_id]), seed=seed)
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
