"""Compiled training on CPU (inductor): stable shapes, so nothing recompiles after warm-up.

The real loop on real packs (stage-c-shaped shards through the loader): every pack has its own
length, expert row counts and ViT patch count, and the blocks are compiled with dynamic shapes.
The metrics' ``compiles`` column (Dynamo's graph counter) must read 0 after the first step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_run import _config
from tests.train_fixtures import write_stage_c_shards
from train.config import TrainConfig
from train.loop import train
from train.metrics import read_metrics

WARMUP, STEPS = 1, 50


@pytest.mark.slow
def test_compiled_blocks_do_not_recompile_after_warmup(tmp_path: Path) -> None:
    shards = write_stage_c_shards(tmp_path / "shards", samples=24)
    config = _config(
        tmp_path,
        "compiled",
        parallel={"compile": True, "activation_checkpointing": "selective"},
        log={"every": 1, "tensorboard": False, "progress": False},
        checkpoint={"every": 1000, "save_final": False},
        max_steps=WARMUP + STEPS,
    )
    out = tmp_path / "run"
    assert train(TrainConfig.from_yaml(config), [shards], out, profile=2) == WARMUP + STEPS

    rows = read_metrics(out)
    assert rows[0]["compiles"] > 0  # the blocks compiled at step 1 (decoder and ViT layers)
    lengths = {r["tokens"] for r in rows[WARMUP:]}
    assert len(lengths) > 10, lengths  # the packs really vary
    recompiles = {r["step"]: r["compiles"] for r in rows[WARMUP:] if r["compiles"]}
    assert recompiles == {}
    assert all(r["data_s"] <= r["step_s"] for r in rows)
    assert (out / "profile" / "trace_rank0.json").stat().st_size > 0
