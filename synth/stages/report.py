"""What a run shows while it runs (a progress bar on stderr) and what it says at the end (a
summary table, and the same numbers as a dict for the manifest). In batch mode both show the
batches (submitted, resumed from an earlier run, in progress, back) and the requests waiting."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

_USAGE_KEYS = (
    "requests", "cache_hits", "errors", "prompt_tokens", "completion_tokens", "thinking_tokens",
    "cost_usd",
)  # fmt: skip


def usage_dict(usage: Any) -> dict[str, float]:
    return {k: getattr(usage, k) for k in _USAGE_KEYS}


def add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in _USAGE_KEYS}


@dataclass
class RunCounters:
    """This process's work, plus the LLM usage earlier (killed) runs of the part recorded."""

    stage: str
    part: int
    num_parts: int
    start_cursor: int
    earlier_llm: dict[str, Any]
    earlier_by_op: dict[str, dict[str, Any]]
    samples: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def usage(self, stats: Any) -> dict[str, Any]:
        """LLM usage so far, earlier runs included: kept in the manifest at every commit, so a
        killed run's paid requests stay counted (those after its last commit are answered from
        the cache on resume and counted as cache hits)."""
        by_op = {
            op: add_usage(self.earlier_by_op.get(op, {}), usage_dict(u))
            for op, u in stats.by_operation.items()
        }
        for op, earlier in self.earlier_by_op.items():
            by_op.setdefault(op, earlier)
        usage: dict[str, Any] = {
            "llm": add_usage(self.earlier_llm, usage_dict(stats.total)),
            "llm_by_operation": dict(sorted(by_op.items())),
        }
        if stats.batch is not None:  # this process's batches, as they stand at the commit
            usage["batches"] = stats.batch.as_dict()
        return usage

    def summary(self, manifest: Any, stats: Any, cursor: int) -> dict[str, Any]:
        """The summary for the manifest: committed counts come from the manifest itself."""
        elapsed = time.monotonic() - self.started
        return {
            "stage": self.stage,
            "part": self.part,
            "num_parts": self.num_parts,
            "items": cursor,
            "samples": manifest.samples,
            "tasks": dict(sorted(manifest.task_counts.items())),
            "rejects": dict(sorted(manifest.reject_counts.items())),
            **self.usage(stats),
            "this_run": {
                "items": cursor - self.start_cursor,
                "elapsed_s": round(elapsed, 3),
                "samples_per_s": round(self.samples / elapsed, 2) if elapsed > 0 else 0.0,
            },
        }


def batch_line(batch: Any) -> str:
    """Batch mode's progress: batches out and back, requests waiting."""
    sent = batch.submitted + batch.resumed
    return (
        f"batches {sent} sent, {batch.in_progress} out, {batch.done + batch.ended_early} back; "
        f"{batch.waiting:,} requests waiting"
    )


class ProgressView:
    """The live bar: items, samples/s, LLM calls, tokens, cost and rejects."""

    # The bar redraws 10 times a second; reading the stats for it once per written item cost
    # ~7 us an item, most of them never drawn.
    REFRESH_S = 0.1

    def __init__(self, enabled: bool, total: int | None, label: str):
        self.console = Console(stderr=True)
        self.enabled = enabled
        self._next_update = 0.0
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn() if total is not None else TextColumn(""),
            MofNCompleteColumn() if total is not None else TextColumn("{task.completed} items"),
            TextColumn("{task.fields[rate]:.1f} samples/s"),
            TextColumn(
                "LLM {task.fields[calls]} calls, {task.fields[tokens]:,} tok, "
                "${task.fields[cost]:.4f}"
            ),
            TextColumn("rejects {task.fields[rejects]}"),
            TextColumn("{task.fields[batches]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(
            label, total=total, rate=0.0, calls=0, tokens=0, cost=0.0, rejects=0, batches=""
        )

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, done: int, counters: RunCounters, stats: Any, *, final: bool = False) -> None:
        """Show ``done`` items; at most every ``REFRESH_S`` unless ``final``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next_update and not final:
            return
        self._next_update = now + self.REFRESH_S
        total = stats.total
        elapsed = max(now - counters.started, 1e-9)
        self._progress.update(
            self._task,
            completed=done,
            rate=counters.samples / elapsed,
            calls=total.requests,
            tokens=total.prompt_tokens + total.completion_tokens + total.thinking_tokens,
            cost=total.cost_usd,
            rejects=sum(counters.rejects.values()),
            batches=batch_line(stats.batch) if stats.batch is not None else "",
        )


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(
        title=f"stage {summary['stage']} part {summary['part']} of {summary['num_parts']}"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    for task, n in summary["tasks"].items():
        table.add_row(f"samples {task}", str(n))
    table.add_row("[bold]samples", f"[bold]{summary['samples']}")
    for reason, n in summary["rejects"].items():
        table.add_row(f"rejects {reason}", str(n))
    table.add_row("[bold]rejects", f"[bold]{sum(summary['rejects'].values())}")
    llm = summary["llm"]
    table.add_row("LLM requests (paid)", str(llm["requests"]))
    table.add_row("LLM cache hits", str(llm["cache_hits"]))
    table.add_row("tokens in / out", f"{llm['prompt_tokens']:,} / {llm['completion_tokens']:,}")
    if llm.get("thinking_tokens"):
        table.add_row("thinking tokens (billed as out)", f"{llm['thinking_tokens']:,}")
    table.add_row("cost (USD)", f"{llm['cost_usd']:.4f}")
    batches = summary.get("batches")
    if batches is not None:
        back = batches["done"] + batches["ended_early"]
        table.add_row(
            "batches submitted / resumed", f"{batches['submitted']} / {batches['resumed']}"
        )
        table.add_row("batches in progress / back", f"{batches['in_progress']} / {back}")
        if batches["ended_early"]:
            table.add_row("batches expired or refused", str(batches["ended_early"]))
        table.add_row("requests waiting in batches", f"{batches['waiting']:,}")
    run = summary["this_run"]
    table.add_row(
        "this run",
        f"{run['items']} items, {run['elapsed_s']:.1f} s, {run['samples_per_s']:.1f} samples/s",
    )
    return table
