"""Sharding is one rule: items[:limit][shard_index::num_shards]. Shards are disjoint, their
union is the unsharded run, and they can share one output directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth.shards import iter_samples, read_manifest
from synth.stages.plan import shard_items
from taxonomy import TASKS
from tests.stages_support import EXAMPLES, run_stage


def test_shard_rule_partitions_any_stream() -> None:
    items = range(23)
    shards = [list(shard_items(items, num_shards=3, shard_index=i, limit=20)) for i in range(3)]
    assert sorted(x for s in shards for x in s) == list(range(20))
    assert shards[1] == [1, 4, 7, 10, 13, 16, 19]


@pytest.mark.parametrize("layout", ["one-dir", "dir-per-shard"])
def test_three_shards_are_disjoint_and_their_union_is_the_unsharded_run(
    tmp_path: Path, layout: str
) -> None:
    whole = tmp_path / "whole"
    run_stage("a", sources=EXAMPLES, out=whole, limit=30, seed=3)
    expected = {s.sample_id: s for s in iter_samples(whole)}

    found: dict[str, object] = {}
    for index in range(3):
        out = tmp_path / ("shared" if layout == "one-dir" else f"part-{index}")
        run_stage("a", sources=EXAMPLES, out=out, limit=30, seed=3, num_shards=3, shard_index=index)
        part = [s for s in iter_samples(out) if s.sample_id not in found]
        if layout == "dir-per-shard":
            assert not set(s.sample_id for s in iter_samples(out)) & set(found)  # disjoint
        found.update((s.sample_id, s) for s in part)
    assert found == expected  # same samples, byte for byte in content
    if layout == "one-dir":
        manifest = read_manifest(tmp_path / "shared")
        assert manifest.complete and manifest.num_parts == 3
        assert manifest.samples == len(expected)
        assert sorted(p.name for p in (tmp_path / "shared").glob("manifest-*.json")) == [
            "manifest-00000.json",
            "manifest-00001.json",
            "manifest-00002.json",
        ]
        # Stage b reads the three parts as one input (and deepens its depth-1 samples).
        run_stage("b", **{"in": tmp_path / "shared"}, out=tmp_path / "b")
        deepened = [s for s in expected.values() if TASKS[s.task].name.depth == "1"]
        b = read_manifest(tmp_path / "b")
        # Every depth-1 sample becomes a sample or a reject (the anchor check refuses a few
        # Chinese rewrites of the template backend: tests/test_bundled_words.py).
        assert b.samples + sum(b.reject_counts.values()) == len(deepened) > 0
        assert set(b.reject_counts) <= {"validate:no-anchor"}


def test_a_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    run_stage("a", sources=EXAMPLES, out=tmp_path, limit=4, seed=1)
    with pytest.raises(ValueError, match="seed: 1 there, 2 here"):
        run_stage("a", sources=EXAMPLES, out=tmp_path, limit=4, seed=2)
    with pytest.raises(ValueError, match=r"3-way|shards"):
        run_stage("a", sources=EXAMPLES, out=tmp_path, limit=4, seed=1, num_shards=3)
    # A larger limit extends the same run: the plan's prefix is the same.
    run_stage("a", sources=EXAMPLES, out=tmp_path, limit=8, seed=1)
    assert read_manifest(tmp_path).samples == 8


def test_the_slurm_array_script_writes_disjoint_shards_into_one_dir(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "slurm_stage_a.sh"
    out = tmp_path / "out"
    for index in range(3):
        env = {
            **os.environ,
            "SLURM_ARRAY_TASK_ID": str(index),
            "SLURM_ARRAY_TASK_COUNT": "3",
            "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": "2",
            "SYNTH": f"{sys.executable} -m synth",
            "PYTHONPATH": str(script.parent.parent),
        }
        subprocess.run(
            ["bash", str(script), str(EXAMPLES), str(out), "--limit", "9"],
            env=env, cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
    whole = tmp_path / "whole"
    run_stage("a", sources=EXAMPLES, out=whole, limit=9)
    assert sorted(s.sample_id for s in iter_samples(out)) == sorted(
        s.sample_id for s in iter_samples(whole)
    )
    assert read_manifest(out).complete
