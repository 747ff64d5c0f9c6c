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
from taxonomy.names import DEPTHS


def ordered(counter: Counter[str]) -> list[tuple[str, int]]:
    """Numeric keys in numeric order, other keys by count; histograms read left to right."""
    if all(k.isdigit() for k in counter):
        return sorted(counter.items(), key=lambda kv: int(kv[0]))
    return counter.most_common()


def _pct(n: float, total: float) -> str:
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


# (column, usage key, format) of the usage tables; the per-operation table leaves out the
# cache hits and errors, which the per-stage table shows, to fit a terminal's 80 columns.
_USAGE_COLUMNS = (
    ("requests", "requests", "{:,.0f}"),
    ("cached", "cache_hits", "{:,.0f}"),
    ("errors", "errors", "{:,.0f}"),
    ("tokens in", "prompt_tokens", "{:,.0f}"),
    ("tokens out", "completion_tokens", "{:,.0f}"),
    ("thinking", "thinking_tokens", "{:,.0f}"),  # shown when a model thought (Gemini 2.5)
    ("USD", "cost_usd", "{:.4f}"),
)


def _usage_columns(table: Table, first: str, keys: tuple[str, ...]) -> None:
    table.add_column(first, no_wrap=True)
    for column, key, _ in _USAGE_COLUMNS:
        if key in keys:
            table.add_column(column, justify="right", no_wrap=True)


def _usage_row(table: Table, name: str, usage: dict[str, float], keys: tuple[str, ...]) -> None:
    cells = [fmt.format(usage.get(key, 0)) for _, key, fmt in _USAGE_COLUMNS if key in keys]
    table.add_row(name, *cells)


def usage_table(stats: DatasetStats) -> Table:
    """What the engine recorded, per stage and in all (the manifests' run summaries)."""
    table = Table(title="LLM usage as the engine recorded it (paid requests)", title_justify="left")
    thought = bool(stats.engine.get("thinking_tokens"))
    keys = tuple(k for _, k, _ in _USAGE_COLUMNS if k != "thinking_tokens" or thought)
    _usage_columns(table, "stage", keys)
    for stage, usage in sorted(stats.engine_by_stage.items()):
        _usage_row(table, stage, usage, keys)
    _usage_row(table, "[bold]all", stats.engine, keys)
    return table


def operation_table(stats: DatasetStats) -> Table:
    table = Table(title="LLM usage per operation (engine)", title_justify="left")
    keys = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")
    _usage_columns(table, "operation", keys)
    by_requests = sorted(stats.engine_by_operation.items(), key=lambda kv: -kv[1]["requests"])
    for op, usage in by_requests:
        _usage_row(table, op, usage, keys)
    return table


def distractor_kind_table(stats: DatasetStats) -> Table:
    """Distractor rounds by kind, next to the share the runs asked for (``distractor_mix``)."""
    total = sum(stats.distractor_kinds.values())
    weights = {k: w for k, w in stats.distractor_mix.items() if w > 0}
    table = Table(title="Distractor rounds by kind", title_justify="left")
    for column in ("kind", "rounds", "share", "asked"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in sorted({*stats.distractor_kinds, *weights}):
        asked = _pct(weights[kind], sum(weights.values(), 0.0)) if kind in weights else "-"
        n = stats.distractor_kinds[kind]
        table.add_row(kind, f"{n:,}", _pct(n, total), asked)
    return table


def render_stats(stats: DatasetStats, console: Console | None = None) -> None:
    console = console or Console()
    dirs = ", ".join(stats.dirs)
    console.print(
        f"[bold]{stats.samples:,}[/] samples, [bold]{stats.rejects:,}[/] rejects, "
        f"{stats.images:,} images in {dirs}; {stats.llm_calls:,} LLM calls wrote their texts "
        f"({stats.prompt_tokens:,} tokens in, {stats.completion_tokens:,} out; a call "
        "inherited from a parent sample is counted once, at the parent)"
    )
    for directory in stats.incomplete:
        console.print(f"[yellow]{directory}: the run has not finished (manifest not complete)[/]")
    if stats.template_calls:
        console.print(
            f"[yellow]{stats.template_calls:,} of the {stats.llm_calls:,} calls were answered by "
            "the offline template backend: sentence frames filled from the inputs, not model "
            "text. Fine for dry runs, cost estimates and tests; not training data.[/]"
        )
    console.print(task_table(stats))
    console.print(_counts_table("Samples per stage", "stage", stats.stages))
    console.print(_counts_table("Dependency depth (taxonomy: 0, 1, n)", "depth", stats.depth))
    console.print(
        _counts_table(
            "Rounds between the final query and its first dependency", "rounds", stats.distance
        )
    )
    console.print(_counts_table("Distractor rounds per sample", "distractors", stats.distractors))
    if stats.distractor_kinds:
        console.print(distractor_kind_table(stats))
    console.print(_counts_table("Dialogue length", "rounds", stats.rounds))
    console.print(_counts_table("Language of the final query", "language", stats.languages))
    console.print(_counts_table("Image sources", "source", stats.image_sources))
    if stats.rejects:
        console.print(_counts_table("Reject reasons", "reason", stats.reject_reasons))
    if stats.llm_calls:
        console.print(
            _counts_table("LLM backends and models (calls)", "backend/model", stats.backends)
        )
    if stats.engine_by_stage:
        console.print(usage_table(stats))
    if stats.engine_by_operation:
        console.print(operation_table(stats))


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
    """Write tasks, dependency depth, language mix and distractor counts as one PNG."""
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
            "Dependency depth (taxonomy: 0, 1, n)",
            [(d, stats.depth[d]) for d in (*DEPTHS, "aux") if stats.depth[d]],
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
