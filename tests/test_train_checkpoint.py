"""Checkpoints: exact round trip, atomic saves, newest-complete resume, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from train.checkpoint import MARKER, Checkpointer, ModelOptimizerState, rng_state, set_rng_state
from train.config import OptimConfig
from train.optim import build_optimizer, build_scheduler


def _trained(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    cfg = OptimConfig(lr=1e-2, warmup_steps=5)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def _save(ck: Checkpointer, step: int, seed: int = 0) -> Path:
    model, opt, sched = _trained(seed)
    states = {"app": ModelOptimizerState(model, opt), "scheduler": sched}
    return ck.save(
        step, states, {"loader": {"row": step}, "rng": rng_state()}, {"config.yaml": "x: 1\n"}
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "ckpt", keep=2)
    model, opt, sched = _trained(0)
    torch.manual_seed(123)
    states = {"app": ModelOptimizerState(model, opt), "scheduler": sched}
    path = ck.save(
        3, states, {"loader": {"row": 17}, "rng": rng_state()}, {"config.yaml": "x: 1\n"}
    )
    after_save = torch.rand(3)

    other, other_opt, other_sched = _trained(1)
    loaded = ck.load(
        ck.latest(), {"app": ModelOptimizerState(other, other_opt), "scheduler": other_sched}
    )
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    for k in sa:
        assert torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])
    assert other_sched.state_dict() == sched.state_dict()  # type: ignore[attr-defined]
    assert loaded["loader"] == {"row": 17}
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), after_save)
    assert (path / "config.yaml").read_text() == "x: 1\n"
    assert json.loads((path / "meta.json").read_text())["step"] == 3


def test_an_interrupted_save_is_never_picked_and_is_cleaned(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "ckpt", keep=3)
    _save(ck, 10)
    # A crash mid-save leaves a .tmp directory with partial files and no marker.
    broken = tmp_path / "ckpt" / "step-0000020.tmp"
    broken.mkdir()
    (broken / "__0_0.distcp").write_bytes(b"partial")
    # A directory renamed without its marker (impossible by construction) is not trusted either.
    (tmp_path / "ckpt" / "step-0000030").mkdir()
    assert ck.latest().step == 10
    _save(ck, 40)
    assert not broken.exists()
    assert [c.step for c in ck.complete()] == [10, 40]


def test_keeps_the_newest_n(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3, 4):
        _save(ck, step)
    assert [c.step for c in ck.complete()] == [3, 4]
    assert all((c.path / MARKER).is_file() for c in ck.complete())


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    _save(Checkpointer(tmp_path / "ckpt", keep=1), 5)
    two = Checkpointer(tmp_path / "ckpt", keep=1, rank=0, world_size=2)
    model, opt, sched = _trained(0)
    with pytest.raises(ValueError, match="same number of ranks"):
        two.load(two.latest(), {"app": ModelOptimizerState(model, opt), "scheduler": sched})


def test_saving_a_saved_step_again_leaves_it_untouched(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "ckpt", keep=2)
    path = _save(ck, 7, seed=0)
    stamp = (path / ".metadata").stat().st_mtime_ns
    assert _save(ck, 7, seed=1) == path
    assert (path / ".metadata").stat().st_mtime_ns == stamp
