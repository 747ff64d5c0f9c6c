"""Run one stage over one shard: plan -> bounded in-flight window -> in-order writes.

    items[:limit][shard_index::num_shards][cursor:]  ->  build (concurrently, up to ``window``)
                                                     ->  outcomes written in item order

Writing in item order (a reorder buffer: built outcomes wait for every earlier one) makes a
shard's bytes a function of the plan alone, so a run killed at any moment and resumed writes
exactly what an uninterrupted run writes; the cursor the writer commits counts the items
of this shard whose outcomes are all on disk, and a resumed run skips that many. Every item
gives exactly one sample or one or more rejects. Concurrency lives in the engine; the window
only keeps the engine fed (twice its concurrency items are built at a time, however long the
oldest one takes).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from synth.contract import DialogueSample, InvariantError, Reject
from synth.shards import Manifest, ShardConfig, ShardWriter, load_part_manifest, read_manifest
from synth.stages.config import RunConfig
from synth.stages.dialogue import Origin, Rejected, StageContext, invariant_reject
from synth.stages.plan import item_rng, shard_items
from synth.stages.report import ProgressView, RunCounters, summary_table

Outcome = DialogueSample | list[Reject]


class Stage(Protocol):
    name: str

    def items(self) -> Iterator[Any]: ...

    def key(self, item: Any) -> str: ...

    def origin(self, item: Any) -> Origin: ...

    async def build(self, item: Any, ctx: StageContext) -> DialogueSample: ...


@asynccontextmanager
async def open_engine(cfg: RunConfig) -> AsyncIterator[Any]:
    """The LLM engine of a run; its response cache (``<out>/.cache`` unless set) is what makes
    a rerun or resume pay for no request twice. Shards sharing an out dir share the cache."""
    from ops.backends import open_engine
    from ops.engine import EngineConfig

    engine_cfg = EngineConfig(
        backend=cfg.llm,
        model=cfg.model,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        rpm=cfg.rpm,
        tpm=cfg.tpm,
        cache_dir=cfg.resolved_cache_dir,
        thinking_budget=cfg.thinking_budget,
        vertex=cfg.vertex,
        project=cfg.project,
        location=cfg.location,
        batch=cfg.batch,
        batch_max_requests=cfg.batch_max_requests,
        batch_max_bytes=cfg.batch_max_bytes,
        batch_window_s=cfg.batch_window_s,
        batch_poll_s=cfg.batch_poll_s,
        batch_poll_max_s=cfg.batch_poll_max_s,
    )
    engine = open_engine(engine_cfg)
    try:
        yield engine
    finally:
        await engine.aclose()


def window_size(concurrency: int) -> int:
    """Items a run builds at a time: twice the engine's concurrency, so the next prompts are
    ready while its slots are busy (at least 16, for small concurrency)."""
    return max(2 * concurrency, 16)


async def build_outcome(stage: Stage, cfg: RunConfig, backend: Any, item: Any) -> Outcome:
    """One item's outcome; a rejected operation or a broken invariant is a reject, not a crash."""
    if isinstance(item, Reject):
        return [item]
    origin = stage.origin(item)
    ctx = StageContext(cfg, backend, origin, item_rng(cfg.seed, stage.name, stage.key(item)))
    try:
        return await stage.build(item, ctx)
    except Rejected as rejected:
        return rejected.rejects
    except InvariantError as err:
        return [invariant_reject(origin, err)]


def check_same_run(out: Path, cfg: RunConfig) -> None:
    """A resumed run (or another shard in the same out dir) must be the same run."""
    for path in sorted(out.glob("manifest-*.json")):
        manifest = load_part_manifest(out, int(path.stem.split("-")[1]))
        if manifest is None:
            continue
        saved = manifest.config.get("identity")
        if saved is None:
            raise ValueError(f"{out} holds shards written by something else than `synth run`")
        mine = cfg.identity()
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} here" for k in diff)
            raise ValueError(
                f"{out} holds a run with other settings ({shown}); resume it with the same "
                "settings, or write this run to another --out"
            )


async def run_shard(
    stage: Stage, cfg: RunConfig, manifest_config: dict[str, Any], total: int | None = None
) -> Manifest:
    assert cfg.out is not None
    check_same_run(cfg.out, cfg)
    shard = ShardConfig(max_rows=cfg.shard_rows)
    if cfg.row_group_rows is not None:
        shard = replace(shard, row_group_rows=cfg.row_group_rows)
    writer = ShardWriter(
        cfg.out,
        part=cfg.shard_index,
        num_parts=cfg.num_shards,
        config=manifest_config,
        shard=shard,
    )
    earlier = writer.manifest.summary
    counters = RunCounters(
        stage=stage.name,
        part=cfg.shard_index,
        num_parts=cfg.num_shards,
        start_cursor=writer.cursor,
        earlier_llm=earlier.get("llm", {}),
        earlier_by_op=earlier.get("llm_by_operation", {}),
    )
    items = shard_items(
        stage.items(), num_shards=cfg.num_shards, shard_index=cfg.shard_index, limit=cfg.limit
    )
    todo = islice(items, writer.cursor, None)
    window = window_size(cfg.concurrency)
    with writer, ProgressView(cfg.progress, total, f"stage {stage.name}") as view:
        async with open_engine(cfg) as engine:
            position = writer.cursor
            view.update(position, counters, engine.stats)
            # In item order: items being built, then built ones waiting for every earlier item
            # to be written. ``window`` items are built at a time, whether or not the head is
            # done: a head that waits out a 429's Retry-After must not leave the engine idle.
            # At most ``window`` more built outcomes wait behind an unfinished head.
            pending: deque[asyncio.Task[Outcome]] = deque()
            building = 0
            finished = asyncio.Event()

            def on_done(_: asyncio.Task[Outcome]) -> None:
                nonlocal building
                building -= 1
                finished.set()

            try:
                while True:
                    while (
                        building < window
                        and len(pending) < 2 * window
                        and (item := next(todo, None)) is not None
                    ):
                        task = asyncio.create_task(build_outcome(stage, cfg, engine, item))
                        task.add_done_callback(on_done)
                        pending.append(task)
                        building += 1
                    if not pending:
                        break
                    if not pending[0].done():
                        finished.clear()
                        await finished.wait()
                        continue
                    outcome = pending.popleft().result()
                    if isinstance(outcome, DialogueSample):
                        writer.add(outcome)
                        counters.samples += 1
                    else:
                        for reject in outcome:
                            writer.add_reject(reject)
                            counters.rejects[reject.reason] += 1
                    position += 1
                    if writer.commit_due:  # the usage so far goes into the manifest it commits
                        writer.manifest.summary = counters.usage(engine.stats)
                    writer.mark(position)
                    view.update(position, counters, engine.stats)
            finally:
                for task in pending:
                    task.cancel()
            view.update(position, counters, engine.stats, final=True)
            writer.manifest.summary = counters.usage(engine.stats)
            writer.commit()
            summary = counters.summary(writer.manifest, engine.stats, position)
        manifest = writer.close(summary)
    view.console.print(summary_table(summary))
    return manifest


def input_total(in_dirs: Sequence[Path], cfg: RunConfig) -> int:
    """Items this shard of a stage b/c run will take from its inputs, for the progress bar (an
    upper bound: samples present in several inputs are taken once)."""
    n = sum(read_manifest(d).samples for d in in_dirs)
    if cfg.limit is not None:
        n = min(n, cfg.limit)
    return len(range(cfg.shard_index, n, cfg.num_shards))
