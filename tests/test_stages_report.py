"""What a run shows while it runs: the progress bar reads the stats at most 10 times a second."""

from __future__ import annotations

import io
import time

from rich.console import Console

from ops.engine.stats import EngineStats
from synth.stages.report import ProgressView, RunCounters


def _drawn(view: ProgressView) -> int:
    task = view._progress.tasks[0]
    return int(task.completed)


def test_the_bar_is_updated_at_most_every_refresh_interval_and_always_at_the_end() -> None:
    view = ProgressView(True, 100, "stage a")
    view.console = Console(file=io.StringIO())
    stats, counters = EngineStats(), RunCounters("a", 0, 1, 0, {}, {})
    view.update(1, counters, stats)
    for done in range(2, 50):  # within one refresh interval of the first update
        view.update(done, counters, stats)
    assert _drawn(view) == 1
    view.update(50, counters, stats, final=True)
    assert _drawn(view) == 50
    time.sleep(ProgressView.REFRESH_S)
    view.update(51, counters, stats)
    assert _drawn(view) == 51
