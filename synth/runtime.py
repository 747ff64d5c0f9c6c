"""Process settings for a synthesis run: the garbage collector, tuned for many short operations.

A run is a long loop of short-lived operations (render, request, parse, write) on top of a large
heap built once at start-up (modules, templates, pydantic validators: ~60k tracked objects).
Python's default collector thresholds suit neither:

- every 700 net container allocations start a young collection, and an operation allocates a
  few hundred containers that reference counting frees anyway: ~90 young and ~8 middle
  collections per 2,000 caption2query operations;
- a full collection walks the whole start-up heap again (one cost ~57 ms in such a run).

``gc_tuned`` freezes what start-up built (``gc.freeze``: never collected, never walked again)
and raises the young threshold to 10,000. Measured in ``bench/bench_ops.py``'s engine process
at concurrency 64 (2,000 operations): time in the collector 70-130 ms -> 8-12 ms, and
2.10M -> 2.01M instructions per operation. Reference cycles are still collected, only in
larger batches; the frozen objects live as long as the process in any case.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_YOUNG_THRESHOLD = 10_000


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
