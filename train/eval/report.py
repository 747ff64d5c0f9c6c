"""From per-document results to the numbers a person reads: per dialogue, then per group.

Per dialogue and variant: CE is the token mean over the final answer's CE targets (all noise
levels pooled), MSE the mean over the final image's latent tokens, averaged over the noise
levels. Context gain of a dialogue: ``loss(replaced) - loss(true)`` and ``loss(none) -
loss(true)``; positive means the true history helped. A group's gain is the mean over its
dialogues with a 95% percentile-bootstrap interval (dialogues resampled with replacement,
seeded per group so an interval does not depend on which other groups exist).

Groups: every task, every depth (``0``/``1``/``n``), every count of distractor rounds, and all.
Intent accuracy pools the decisions of the final answer (a stop decision read from the noised
image counts once, averaged over the noise levels) and, separately, those of the history's
assistant turns under the true history.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from taxonomy import TaskName
from train.eval.dataset import Dialogue
from train.eval.probes import DocResult
from train.eval.variants import VARIANTS

GAINS = ("ce_replaced", "ce_none", "mse_replaced", "mse_none")
DECISIONS = ("modality", "end")


def dialogue_records(
    dialogues: Sequence[Dialogue], results: Iterable[DocResult], timesteps: Sequence[float]
) -> list[dict[str, Any]]:
    """One record per dialogue that has results: its losses per variant and its gains."""
    by: dict[int, dict[str, DocResult]] = defaultdict(dict)
    for r in results:
        assert r.variant not in by[r.dialogue], f"dialogue {r.dialogue} {r.variant} twice"
        by[r.dialogue][r.variant] = r
    records = []
    for i in sorted(by):
        sample = dialogues[i].sample
        variants = dialogues[i].variants
        rec: dict[str, Any] = {
            "sample_id": sample.sample_id,
            "task": sample.task,
            "depth": TaskName.parse(sample.task).depth,
            "distractors": len(sample.provenance.distractor_turns) // 2,
            "donors": [vars(d) for d in variants.donors],
            "no_replaced": variants.missing,
            "tokens": {},
            "ce": {},
            "mse": {},
            "mse_by_t": {},
            "intent": {},
        }
        history = {k: [0.0, 0.0] for k in DECISIONS}
        for v, r in sorted(by[i].items(), key=lambda kv: VARIANTS.index(kv[0])):
            assert len(r.mse) == len(timesteps), (i, v)
            rec["tokens"][v] = r.tokens
            rec["ce"][v] = r.ce_sum / r.ce_weight if r.ce_weight else math.nan
            rec["mse_by_t"][v] = list(r.mse)
            rec["mse"][v] = sum(r.mse) / len(r.mse)
            final = {k: [0.0, 0.0] for k in DECISIONS}
            for kind, in_final, right, weight in r.decisions:
                if in_final:
                    final[kind][0] += weight * right
                    final[kind][1] += weight
                elif v == "true":
                    history[kind][0] += weight * right
                    history[kind][1] += weight
            rec["intent"][v] = final
        rec["intent_history"] = history
        for metric in ("ce", "mse"):
            for other in ("replaced", "none"):
                if other in rec[metric] and "true" in rec[metric]:
                    rec[f"gain_{metric}_{other}"] = rec[metric][other] - rec[metric]["true"]
        records.append(rec)
    return records


def bootstrap(values: Sequence[float], resamples: int, seed: int) -> dict[str, float]:
    """Mean and 95% percentile-bootstrap interval of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "n": int(x.size)}


def _group_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{key}".encode()).digest()[:8], "big")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(
    records: Sequence[dict[str, Any]],
    timesteps: Sequence[float],
    resamples: int,
    seed: int,
    key: str,
) -> dict[str, Any]:
    """The numbers of one group of dialogue records."""
    out: dict[str, Any] = {"dialogues": len(records), "ce": {}, "mse": {}, "mse_by_t": {}}
    for v in VARIANTS:
        have = [r for r in records if v in r["ce"]]
        if not have:
            continue
        out["ce"][v] = _mean([r["ce"][v] for r in have])
        out["mse"][v] = _mean([r["mse"][v] for r in have])
        out["mse_by_t"][v] = {
            str(t): _mean([r["mse_by_t"][v][k] for r in have]) for k, t in enumerate(timesteps)
        }
    out["gain"] = {
        g: bootstrap(
            [r[f"gain_{g}"] for r in records if f"gain_{g}" in r],
            resamples,
            _group_seed(seed, key + g),
        )
        for g in GAINS
    }
    out["intent"] = {
        v: _accuracy([r["intent"][v] for r in records if v in r["intent"]]) for v in VARIANTS
    }
    out["intent_history"] = _accuracy([r["intent_history"] for r in records])
    return out


def _accuracy(counts: list[dict[str, list[float]]]) -> dict[str, Any]:
    acc: dict[str, Any] = {}
    for kind in DECISIONS:
        right = sum(c[kind][0] for c in counts)
        total = sum(c[kind][1] for c in counts)
        acc[kind] = right / total if total else math.nan
        acc[f"{kind}_decisions"] = total
    return acc


def build_report(
    records: Sequence[dict[str, Any]],
    *,
    timesteps: Sequence[float],
    resamples: int,
    seed: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Every number: the groups, then the dialogues."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {
        "task": defaultdict(list),
        "depth": defaultdict(list),
        "distractors": defaultdict(list),
    }
    for r in records:
        for by in groups:
            groups[by][str(r[by])].append(r)

    def summary(key: str, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return summarize(members, timesteps, resamples, seed, key)

    return {
        **meta,
        "all": summary("all", records),
        **{
            f"by_{by}": {
                name: summary(f"{by}={name}", members)
                for name, members in sorted(found.items(), key=lambda kv: _order(kv[0]))
            }
            for by, found in groups.items()
        },
        "dialogues": list(records),
    }


def _order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)
