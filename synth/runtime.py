"""Process settings for a synthesis run: many short operations on one event loop.

``run_async`` runs a stage's coroutine under the first two settings below, each restored on
exit (``synth.stages.run`` may be called from a notebook); the third is the ``synth run``
command's, made before pyarrow loads. ``bench/bench_ops.py`` applies the same settings and
``bench/bench_stage_a.py`` runs the command, so that what they measure is what ``synth run`` does.

**Garbage collector.** A run is a long loop of short-lived operations (render, request, parse,
write) on top of a large heap built once at start-up (modules, templates, pydantic validators:
~60k tracked objects). Python's default collector thresholds suit neither:

- every 700 net container allocations start a young collection, and an operation allocates a
  few hundred containers that reference counting frees anyway: ~90 young and ~8 middle
  collections per 2,000 caption2query operations;
- a full collection walks the whole start-up heap again (one cost ~57 ms in such a run).

``gc_tuned`` freezes what start-up built (``gc.freeze``: never collected, never walked again)
and raises the young threshold to 10,000. Measured in ``bench/bench_ops.py``'s engine process
at concurrency 64 (2,000 operations): time in the collector 70-130 ms -> 8-12 ms, and
2.10M -> 2.01M instructions per operation. Reference cycles are still collected, only in
larger batches; the frozen objects live as long as the process in any case.

**Event loop.** uvloop where it is installed (a dependency everywhere but Windows). With the
openai backend on aiohttp, uvloop saved CPU: ``bench/bench_ops.py``'s engine at concurrency 64,
the same code on either loop, alternated: -0.073 +- 0.022 ms per operation over 28 pairs
(about -8%). Since the backend sends through ``ops.engine.http1`` (a few loop callbacks per
request, no aiohttp session), the loop no longer matters measurably: 8 pairs at concurrency 64,
0.543 ms per operation on uvloop against 0.535 on asyncio's; 4 pairs at 256, 0.501 against
0.519. uvloop stays the default for the other clients a run may use (aiohttp behind a proxy,
the SDKs); peak RSS is ~2.5 MB higher (the extension and its loop).

**Arrow's allocator.** pyarrow allocates from mimalloc by default, which keeps the pages of
freed buffers. A shard writer frees its page and compression buffers at every row group, so
under mimalloc they stay resident: ``bench/bench_ops.py``'s engine at concurrency 256 with 5%
429s peaked at 146-147 MB on asyncio's loop and 149 MB on uvloop's, and at 138 / 140 MB with
the system allocator, at no CPU cost measured (8 rounds at concurrency 64: 0.907 ms under
mimalloc, 0.904 under the system allocator). ``prefer_system_allocator`` chooses it;
``ARROW_DEFAULT_MEMORY_POOL`` set by the user wins.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

GC_YOUNG_THRESHOLD = 10_000

EventLoopName = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


@contextmanager
def gc_tuned(young_threshold: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze the heap built so far and collect young objects less often; restored on exit."""
    before = gc.get_threshold()
    frozen_by_caller = gc.get_freeze_count() > 0
    gc.collect()  # garbage made by start-up is freed now, not frozen with the rest
    gc.freeze()
    gc.set_threshold(young_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if not frozen_by_caller:  # unfreeze() would undo the caller's freeze too
            gc.unfreeze()


def loop_factory(name: EventLoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a run uses: uvloop's where installed (``auto``), or asyncio's own (None)."""
    if name == "asyncio" or (name == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    try:
        import uvloop
    except ImportError as err:
        raise ValueError(
            "event loop 'uvloop' is not installed: pip install uvloop, or choose 'asyncio'"
        ) from err
    return uvloop.new_event_loop


def prefer_system_allocator() -> None:
    """Have pyarrow allocate with the system allocator unless the user chose one (see the module
    docstring). Call it before pyarrow is imported: its C++ default pool, which the Parquet
    writer's column buffers come from, is fixed then and ``pa.set_memory_pool`` does not reach
    it. ``synth run`` calls it first thing; a process that already imported pyarrow is left as
    it is."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def run_async(main: Coroutine[Any, Any, T], event_loop: EventLoopName = "auto") -> T:
    """Run ``main`` to completion on a new event loop under a run's process settings."""
    try:
        factory = loop_factory(event_loop)
    except ValueError:
        main.close()  # never started: no "was never awaited" warning on top of the error
        raise
    with gc_tuned(), asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
