"""The stage runner keeps building while the oldest item waits, and still writes in item order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synth.contract import DialogueSample
from synth.shards import iter_samples, read_manifest
from synth.stages.config import RunConfig
from synth.stages.dialogue import Origin, StageContext
from synth.stages.runner import run_shard, window_size
from tests.builders import build_sample

CONCURRENCY = 4
WINDOW = window_size(CONCURRENCY)
ITEMS = 60


class SlowHeadStage:
    """Item 0 is built only after more than a window of later items are: a head waiting out a
    long Retry-After. A runner that starts no new item until the head is done never gets
    there."""

    name = "a"

    def __init__(self, wait_for: int) -> None:
        self.wait_for = wait_for
        self.started: list[int] = []
        self.built: list[int] = []
        self.enough = asyncio.Event()
        self.started_when_released = 0

    def items(self) -> Iterator[int]:
        return iter(range(ITEMS))

    def key(self, item: int) -> str:
        return f"item-{item}"

    def origin(self, item: int) -> Origin:
        return Origin("a", "t_i_0_0", f"s{item}", [f"src:{item}"], {"item": item})

    async def build(self, item: int, ctx: StageContext) -> DialogueSample:
        self.started.append(item)
        if item == 0:
            await self.enough.wait()
        else:
            await asyncio.sleep(0.001 * (item % 3))  # finish out of order
        self.built.append(item)
        if len(self.built) >= self.wait_for and not self.enough.is_set():
            self.started_when_released = len(self.started)
            self.enough.set()
        return build_sample("t_i_0_0", seed=item)


def _run(stage: Any, out: Path) -> None:
    cfg = RunConfig(out=out, concurrency=CONCURRENCY, progress=False, shard_rows=7)
    config = {"run": cfg.public(), "identity": cfg.identity()}
    asyncio.run(asyncio.wait_for(run_shard(stage, cfg, config), timeout=60))


def test_a_waiting_head_does_not_stop_later_items(tmp_path: Path) -> None:
    stage = SlowHeadStage(wait_for=WINDOW + 8)
    _run(stage, tmp_path / "out")
    assert stage.built.index(0) >= WINDOW + 8 - 1  # built after more than a window of others
    written = [s.provenance.seed for s in iter_samples(tmp_path / "out")]
    assert written == [build_sample("t_i_0_0", seed=i).provenance.seed for i in range(ITEMS)]
    assert read_manifest(tmp_path / "out").cursor == ITEMS


def test_outcomes_wait_for_the_head_in_a_bounded_buffer(tmp_path: Path) -> None:
    # Built outcomes wait behind the head, two windows of items at most: when the head is
    # released, every other item of the first two windows is built and no later one started.
    stage = SlowHeadStage(wait_for=2 * WINDOW - 1)
    _run(stage, tmp_path / "out")
    assert stage.started_when_released == 2 * WINDOW
    assert sorted(stage.started[: 2 * WINDOW]) == list(range(2 * WINDOW))
    assert len(stage.built) == ITEMS
    assert [s.sample_id for s in iter_samples(tmp_path / "out")] == [
        build_sample("t_i_0_0", seed=i).sample_id for i in range(ITEMS)
    ]
