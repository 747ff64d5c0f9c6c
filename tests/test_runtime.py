"""synth.runtime: the collector settings of a run are applied, still collect cycles, and are
restored afterwards (``synth.stages.run`` may be called from a notebook)."""

from __future__ import annotations

import gc
import weakref

import pytest

from synth.runtime import GC_YOUNG_THRESHOLD, gc_tuned


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_gc_tuned_freezes_raises_the_threshold_and_restores_both():
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with gc_tuned():
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen_before
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle made during the run is still collected
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before == 0


def test_gc_tuned_restores_after_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), gc_tuned(young_threshold=5000):
        assert gc.get_threshold()[0] == 5000
        raise RuntimeError("a run that fails")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
