"""synth.runtime: a run's process settings (collector, event loop, Arrow's allocator) are
applied, still collect cycles, and are restored afterwards (``synth.stages.run`` may be called
from a notebook)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from synth.runtime import GC_YOUNG_THRESHOLD, gc_tuned, loop_factory, run_async
from synth.stages.config import load_run_config


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


async def _settings() -> tuple[str, int]:
    return type(asyncio.get_running_loop()).__module__, gc.get_threshold()[0]


def test_run_async_runs_on_uvloop_under_the_collector_settings_and_restores_them():
    pytest.importorskip("uvloop")
    threshold = gc.get_threshold()
    module, young = run_async(_settings())
    assert module.startswith("uvloop") and young == GC_YOUNG_THRESHOLD
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0


def test_asyncio_loop_on_request():
    module, _ = run_async(_settings(), "asyncio")
    assert module.startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed (Windows)
    assert loop_factory("auto") is None
    module, _ = run_async(_settings())
    assert module.startswith("asyncio")
    main = _settings()
    with pytest.raises(ValueError, match="pip install uvloop, or choose 'asyncio'"):
        run_async(main, "uvloop")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED  # closed, not left unawaited


def test_the_event_loop_is_a_runtime_option_a_resume_may_change():
    auto = load_run_config("a", None, {})
    chosen = load_run_config("a", None, {"event_loop": "asyncio"})
    assert (auto.event_loop, chosen.event_loop) == ("auto", "asyncio")
    assert auto.identity() == chosen.identity()
    with pytest.raises(ValueError, match="event_loop"):
        load_run_config("a", None, {"event_loop": "trio"})


_POOL = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _no_pool_choice() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}


def _pool_after(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {_POOL}"],
        capture_output=True, text=True, check=True, env={**_no_pool_choice(), **env},
    )  # fmt: skip
    return done.stdout.strip()


def test_the_system_allocator_is_preferred_before_pyarrow_loads_and_a_user_choice_wins():
    prefer = "from synth.runtime import prefer_system_allocator; prefer_system_allocator()"
    assert _pool_after(prefer) == "system"
    assert _pool_after(prefer, ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"
    assert _pool_after(f"import pyarrow; {prefer}") != "system"  # too late: left as it is


def test_synth_run_writes_its_shards_with_the_system_allocator(tmp_path):
    # The command must choose before anything it imports loads pyarrow.
    report = (
        "atexit.register(lambda: print(__import__('pyarrow').default_memory_pool().backend_name))"
    )
    sources = Path(__file__).resolve().parents[1] / "examples" / "sources.yaml"
    argv = ["synth", "run", "stage-a", "--sources", str(sources), "--limit", "2",
            "--out", str(tmp_path / "a"), "--no-progress"]  # fmt: skip
    code = f"import atexit, sys; {report}; sys.argv = {argv!r}; from synth.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, env=_no_pool_choice(),
    )  # fmt: skip
    assert "stage a: 2 samples" in done.stdout and done.stdout.strip().endswith("system")
