"""One PNG: context gain per task with 95% intervals (MSE and CE, replaced and no history), and
intent accuracy of the final answer per task and history."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from train.eval.variants import VARIANTS

SERIES = (
    ("mse_replaced", "ΔMSE replaced"),
    ("mse_none", "ΔMSE none"),
    ("ce_replaced", "ΔCE replaced"),
    ("ce_none", "ΔCE none"),
)


def plot_report(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError(
            "the chart needs matplotlib: pip install -e '.[viz]' (or turn the plot off)"
        ) from err

    tasks = list(report["by_task"])
    n = len(tasks)
    fig, axes = plt.subplots(
        1, 3, figsize=(16, 1.2 + 0.42 * max(n, 4)), sharey=True,
        gridspec_kw={"width_ratios": [2, 2, 1.3]},
    )  # fmt: skip
    rows = list(range(n))
    for ax, metric in zip(axes[:2], ("mse", "ce"), strict=True):
        for j, (key, label) in enumerate(s for s in SERIES if s[0].startswith(metric)):
            means, lo, hi, ys = [], [], [], []
            for i, task in enumerate(tasks):
                g = report["by_task"][task]["gain"][key]
                if g["n"] and all(math.isfinite(g[k]) for k in ("mean", "lo", "hi")):
                    ys.append(i + (j - 0.5) * 0.3)
                    means.append(g["mean"])
                    lo.append(g["mean"] - g["lo"])
                    hi.append(g["hi"] - g["mean"])
            ax.errorbar(means, ys, xerr=[lo, hi], fmt="o", capsize=3, label=label)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"context gain, {metric.upper()} (loss − loss with true history)")
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    for j, v in enumerate(VARIANTS):
        pooled = [_pooled(report["by_task"][t]["intent"][v]) for t in tasks]
        ax.barh([i + (j - 1) * 0.27 for i in rows], pooled, height=0.25, label=v)
    ax.set_xlim(0, 1)
    ax.set_title("intent accuracy, final answer (talk/draw/stop)")
    ax.legend(loc="lower right", fontsize=8)
    axes[0].set_yticks(rows, tasks)
    axes[0].invert_yaxis()
    fig.suptitle(f"{report['checkpoint']}: {report['all']['dialogues']} dialogues", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pooled(intent: dict[str, float]) -> float:
    """The modality and end decisions together (0 when there are none)."""
    right = total = 0.0
    for kind in ("modality", "end"):
        n = intent[f"{kind}_decisions"]
        if n:
            right += intent[kind] * n
            total += n
    return right / total if total else 0.0
