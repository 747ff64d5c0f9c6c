"""The report on disk: ``report.json`` (every number), ``report.md`` (tables), ``report.png``.

JSON is written without NaN (a missing value is ``null``), so any JSON reader takes it. The
chart needs matplotlib (the ``viz`` or ``dev`` extra); without it the JSON and markdown are
still written and the caller is told why there is no PNG.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train.eval.variants import VARIANTS

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: dict[str, Any], out: Path, plot: bool = True) -> list[Path]:
    """Write the report files into ``out``; returns those written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_JSON, out / REPORT_MD]
    _write(written[0], json.dumps(_clean(report), indent=1, ensure_ascii=False) + "\n")
    _write(written[1], markdown(report))
    if plot:
        from train.eval.plot import plot_report

        plot_report(report, out / REPORT_PNG)
        written.append(out / REPORT_PNG)
    return written


def _num(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _gain(g: dict[str, Any]) -> str:
    if not g["n"]:
        return "–"
    return f"{_num(g['mean'], True)} [{_num(g['lo'], True)}, {_num(g['hi'], True)}]"


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.0f}%"


def _intent(s: dict[str, Any], kind: str) -> str:
    return " / ".join(_pct(s["intent"][v][kind]) for v in VARIANTS)


HEADER = (
    "| {what} | n | CE true | ΔCE replaced [95% CI] | ΔCE none [95% CI] | MSE true "
    "| ΔMSE replaced [95% CI] | ΔMSE none [95% CI] | modality (true / repl. / none) "
    "| end (true / repl. / none) |"
)


def _rows(groups: dict[str, dict[str, Any]]) -> Iterator[str]:
    for name, s in groups.items():
        g = s["gain"]
        yield (
            f"| {name} | {s['dialogues']} | {_num(s['ce'].get('true'))} | {_gain(g['ce_replaced'])} "
            f"| {_gain(g['ce_none'])} | {_num(s['mse'].get('true'))} | {_gain(g['mse_replaced'])} "
            f"| {_gain(g['mse_none'])} | {_intent(s, 'modality')} | {_intent(s, 'end')} |"
        )


def _table(what: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    return [HEADER.format(what=what), "|" + "---|" * 10, *_rows(groups)]


def markdown(report: dict[str, Any]) -> str:
    t = ", ".join(str(x) for x in report["timesteps"])
    lines = [
        f"# Context probes: {report['checkpoint']}",
        "",
        f"{report['all']['dialogues']} held-out dialogues, noise levels t = {t}, seed "
        f"{report['seed']}, {report['ranks']} rank(s), {report['tokens']} tokens at "
        f"{report['tokens_per_s']:.0f} tokens/s.",
        "",
        "Losses are on the final answer only (teacher-forced). Δ = loss with the replaced or no "
        "history minus loss with the true history: above 0 (interval above 0) means the model "
        "uses the history. Intent: share of right talk/draw choices at a turn's start "
        "(modality) and of right continue/stop choices after a segment (end), final answer.",
        "",
        "## Per task",
        "",
        *_table("task", report["by_task"]),
        "",
        "## Per depth",
        "",
        *_table("depth", report["by_depth"]),
        "",
        "## Per distractor rounds",
        "",
        *_table("distractors", report["by_distractors"]),
        "",
        "## All",
        "",
        *_table("all", {"all": report["all"]}),
        "",
    ]
    history = report["all"]["intent_history"]
    lines += [
        f"History turns (true history): modality {_pct(history['modality'])} of "
        f"{history['modality_decisions']}, end {_pct(history['end'])} of "
        f"{history['end_decisions']} decisions.",
        "",
    ]
    skipped = {k: v for k, v in report["counts"].items() if k.startswith(("skipped", "no_"))}
    if skipped:
        lines += ["Left out: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ".", ""]
    return "\n".join(lines)
