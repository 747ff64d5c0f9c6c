"""``DatasetStats`` as rich tables for the terminal and as one PNG of charts.

matplotlib is an optional extra (``pip install chatumm[viz]``): the tables need only rich, and a
synthesis node never has to install a plotting stack to write shards.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synth.stats import DatasetStats
from taxonomy import TASKS


def ordered(counter: Counter[str]) -> list[tuple[str, int]]:
    """Numeric keys in numeric order, other keys by count; histograms read left to right."""
    if all(k.isdigit() for k in counter):
        return sorted(counter.items(), key=lambda kv: int(kv[0]))
    return counter.most_common()


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _counts_table(title: str, key: str, counter: Counter[str], total: int | None = None) -> Table:
    total = sum(counter.values()) if total is None else total
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for name, n in ordered(counter):
        table.add_row(name, f"{n:,}", _pct(n, total))
    return table


def task_table(stats: DatasetStats) -> Table:
    table = Table(title="Samples per task", title_justify="left")
    for column in ("task", "stage", "depth", "count", "share"):
        table.add_column(
            column, justify="right" if column in ("count", "share") else "left", no_wrap=True
        )
    # The names and numbers keep their width; only the description gives way on a narrow
    # terminal (~50 columns go to the others and the borders).
    width = max(16, Console().width - 50)
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=width)
    for task, n in sorted(stats.tasks.items()):
        spec = TASKS.get(task)
        depth = spec.name.depth if spec else "aux"
        description = spec.description if spec else "auxiliary understanding/chat sample"
        stage = spec.stage if spec else "-"
        table.add_row(task, stage, depth, f"{n:,}", _pct(n, stats.samples), description)
    return table


def render_stats(stats: DatasetStats, console: Console | None = None) -> None:
    console = console or Console()
    dirs = ", ".join(stats.dirs)
    console.print(
        f"[bold]{stats.samples:,}[/] samples, [bold]{stats.rejects:,}[/] rejects, "
        f"{stats.images:,} images, {stats.llm_calls:,} LLM calls in {dirs}"
    )
    for directory in stats.incomplete:
        console.print(f"[yellow]{directory}: the run has not finished (manifest not complete)[/]")
    console.print(task_table(stats))
    console.print(_counts_table("Samples per stage", "stage", stats.stages))
    console.print(_counts_table("Task depth", "depth", stats.depth))
    console.print(
        _counts_table("Rounds from first dependency to final query", "rounds back", stats.distance)
    )
    console.print(_counts_table("Distractor rounds per sample", "distractors", stats.distractors))
    console.print(_counts_table("Dialogue length", "rounds", stats.rounds))
    console.print(_counts_table("Language of the final query", "language", stats.languages))
    console.print(_counts_table("Image sources", "source", stats.image_sources))
    if stats.rejects:
        console.print(_counts_table("Reject reasons", "reason", stats.reject_reasons))
    if stats.llm_calls:
        console.print(
            _counts_table("LLM backends and models (calls)", "backend/model", stats.backends)
        )
        console.print(_counts_table("Templates (calls)", "operation@version", stats.templates))
    usage = Table(title="Usage", title_justify="left")
    usage.add_column("what")
    usage.add_column("value", justify="right")
    usage.add_row("prompt tokens (kept samples)", f"{stats.prompt_tokens:,}")
    usage.add_row("completion tokens (kept samples)", f"{stats.completion_tokens:,}")
    for key, value in sorted(stats.run_summary.items()):
        usage.add_row(
            f"run summary: {key}", f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"
        )
    console.print(usage)


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib, which is an optional extra: pip install 'chatumm[viz]' "
            "(or pip install 'matplotlib>=3.8')"
        ) from None
    matplotlib.use("Agg")  # files only; never open a window or need a display
    import matplotlib.pyplot as plt

    return plt


def plot_stats(stats: DatasetStats, path: str | Path) -> Path:
    """Write tasks, dependency distance, language mix and distractor counts as one PNG."""
    plt = _require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--plot writes a PNG; give a file name ending in .png, not {path.name!r}")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    panels = (
        (axes[0][0], "Samples per task", sorted(stats.tasks.items()), True),
        (
            axes[0][1],
            "Dependency depth (rounds back to the first dependency)",
            ordered(stats.distance),
            False,
        ),
        (axes[1][0], "Language of the final query", ordered(stats.languages), False),
        (axes[1][1], "Distractor rounds per sample", ordered(stats.distractors), False),
    )
    for ax, title, items, horizontal in panels:
        labels, values = [k for k, _ in items], [v for _, v in items]
        if horizontal:
            bars = ax.barh(labels, values, color="#4C72B0")
            ax.invert_yaxis()
        else:
            bars = ax.bar(labels, values, color="#55A868")
        ax.bar_label(bars, fmt="%d", padding=2, fontsize=8)
        (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        if not items:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{stats.samples:,} samples, {stats.rejects:,} rejects")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
