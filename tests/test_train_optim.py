"""AdamW, the warmup-then-constant schedule, and the EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train.config import OptimConfig
from train.optim import EMA, build_optimizer, build_scheduler


def test_schedule_warms_up_linearly_then_stays_constant() -> None:
    model = nn.Linear(3, 3)
    cfg = OptimConfig(warmup_steps=200)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(400):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-5 / 200)
    assert lrs[99] == pytest.approx(2e-5 * 100 / 200)
    assert lrs[199:] == [pytest.approx(2e-5)] * 201
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.95), 1e-15, 0.0)


def test_frozen_parameters_are_not_optimised() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[0].requires_grad_(False)
    opt = build_optimizer(model, OptimConfig())
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model[1].parameters()}
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        build_optimizer(model, OptimConfig())


def test_ema_tracks_the_weights() -> None:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.5 * 1 + 0.5 * 3
    assert torch.equal(ema.state_dict()["weight"], torch.full((1, 2), 2.0))
    fresh = EMA(model, decay=0.5)
    fresh.load_state_dict(ema.state_dict())
    assert torch.equal(fresh.state_dict()["weight"], torch.full((1, 2), 2.0))
