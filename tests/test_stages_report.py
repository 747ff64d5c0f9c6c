"""What a run shows while it runs: the progress bar reads the stats at most 10 times a second."""

from __future__ import annotations

from ops.engine.stats import EngineStats
from synth.stages.report import ProgressView, RunCounters


def _drawn(view: ProgressView) -> int:
    task = view._progress.tasks[0]
    return int(task.completed)


def test_the_bar_is_updated_at_most_every_refresh_interval_and_always_at_the_end() -> None:
    view = ProgressView(True, 100, "stage a")  # never started: nothing is drawn
    stats, counters = EngineStats(), RunCounters("a", 0, 1, 0, {}, {})
    view.REFRESH_S = 3600.0  # every later update falls inside the interval, however slow CI is
    view.update(1, counters, stats)
    for done in range(2, 50):
        view.update(done, counters, stats)
    assert _drawn(view) == 1
    view.update(50, counters, stats, final=True)
    assert _drawn(view) == 50
    view.REFRESH_S = 0.0
    view.update(51, counters, stats, final=True)  # resets the interval to REFRESH_S from now
    view.update(52, counters, stats)
    assert _drawn(view) == 52
