"""Training efficiency options: selective activation checkpointing, compiled blocks that do
not recompile, the profiler trace and the data-wait column of the metrics.

The compile test is the real loop on real packs (stage-c-shaped shards through the loader) on
CPU with inductor: every pack has its own length, expert row counts and ViT patch count; the
metrics' ``compiles`` column (Dynamo's graph counter) must read 0 after the first step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.model_batches import dialogue_batch, one_torch_thread  # noqa: F401
from tests.test_train_run import _config
from tests.train_fixtures import write_stage_c_shards
from train.config import ParallelConfig, TrainConfig
from train.loop import train
from train.metrics import read_metrics
from train.model import ChatUMM, ModelConfig
from train.parallelize import apply_activation_checkpointing

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


class _CountMatmuls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
        return func(*args, **(kwargs or {}))


def test_selective_checkpointing_recomputes_no_matmul_and_changes_no_gradient():
    cfg = ModelConfig.tiny()
    batch = dialogue_batch(cfg)
    torch.manual_seed(0)
    base = ChatUMM(cfg).train()
    grads, backward_matmuls = {}, {}
    for mode in ("off", "full", "selective"):
        model = copy.deepcopy(base)
        if mode != "off":
            apply_activation_checkpointing(model, mode)
        torch.manual_seed(0)
        terms = model(batch)
        counter = _CountMatmuls()
        with counter:
            (terms.ce_sum + terms.mse_sum).backward()
        backward_matmuls[mode] = counter.count
        grads[mode] = {
            name.replace("_checkpoint_wrapped_module.", ""): p.grad
            for name, p in model.named_parameters()
            if p.grad is not None
        }
    # full recomputes every block's forward matmuls in backward; selective keeps their outputs
    assert backward_matmuls["full"] > backward_matmuls["off"] == backward_matmuls["selective"]
    for mode in ("full", "selective"):
        assert grads[mode].keys() == grads["off"].keys()
        for name, grad in grads["off"].items():
            torch.testing.assert_close(grads[mode][name], grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    ("given", "mode"), [(True, "full"), (False, "off"), ("selective", "selective")]
)
def test_activation_checkpointing_config_takes_modes_and_booleans(given, mode):
    assert ParallelConfig(activation_checkpointing=given).activation_checkpointing == mode


def test_unknown_activation_checkpointing_mode_is_refused():
    with pytest.raises(ValueError, match="activation_checkpointing"):
        ParallelConfig(activation_checkpointing="partial")
