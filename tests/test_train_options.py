"""Step-level behaviour on the real tiny model: non-finite steps, freezing, EMA and export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.train_fixtures import write_stage_c_shards
from train.config import OptimConfig, TrainConfig
from train.data import PackedLoader, default_tokenizer_path, load_tokenizer
from train.loop import initial_model, train
from train.optim import build_optimizer
from train.parallelize import build_mesh
from train.resolve import apply_freeze, resolve_data_config, resolve_model_config
from train.step import loss_token_counts, train_step

TINY = Path(__file__).resolve().parents[1] / "train/configs/tiny.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    shards = write_stage_c_shards(tmp_path_factory.mktemp("stage_c"), samples=12)
    cfg = TrainConfig.from_yaml(TINY)
    model_cfg = resolve_model_config(cfg, None, None)
    data_cfg = resolve_data_config(cfg, model_cfg)
    loader = PackedLoader([shards], data_cfg, load_tokenizer(default_tokenizer_path()))
    return cfg, model_cfg, shards, next(iter(loader))


def _step(model, optimizer, pack):
    return train_step(
        model,
        optimizer,
        [pack],
        step=1,
        seed=0,
        dp_rank=0,
        dp_world=1,
        ce_weight=1.0,
        mse_weight=1.0,
        grad_clip=1.0,
        attention="sdpa",
        device=torch.device("cpu"),
    )


def test_a_non_finite_step_is_skipped(setup) -> None:
    cfg, model_cfg, _, pack = setup
    model = initial_model(cfg, model_cfg, None)
    with torch.no_grad():
        model.llm.lm_head.weight[0, 0] = math.nan
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, cfg.optim)
    result = _step(model, optimizer, pack)
    assert not result.finite and math.isnan(result.ce)
    assert all(p.grad is None for p in model.parameters())
    assert not optimizer.state  # AdamW never stepped
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_loss_token_counts_match_the_model(setup) -> None:
    cfg, model_cfg, _, pack = setup
    terms = initial_model(cfg, model_cfg, None)(pack)
    n_ce, n_mse = loss_token_counts(pack)
    assert (n_ce, n_mse) == (int(terms.ce_tokens), int(terms.mse_tokens)) and n_mse > 0


def test_freezing_the_understanding_expert_trains_only_the_rest(setup) -> None:
    cfg, model_cfg, _, pack = setup
    model = initial_model(cfg, model_cfg, None)
    apply_freeze(model, ["understanding_expert"])
    und = [p for layer in model.llm.layers for p in layer.experts[0].parameters()]
    gen = [p for layer in model.llm.layers for p in layer.experts[1].parameters()]
    assert not any(p.requires_grad for p in und) and all(p.requires_grad for p in gen)
    assert not model.llm.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.vae.parameters())
    before = [p.detach().clone() for p in und + gen]
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, warmup_steps=0))
    assert _step(model, optimizer, pack).finite
    after = und + gen
    assert all(
        torch.equal(a, b) for a, b in zip(before[: len(und)], after[: len(und)], strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(before[len(und) :], after[len(und) :], strict=True)
    )


def test_mesh_must_divide_the_world() -> None:
    with pytest.raises(ValueError, match="must divide the world size"):
        build_mesh("cpu", 4, 3)


def test_ema_and_frozen_vit_through_a_run_and_export(setup, tmp_path: Path) -> None:
    from train.export import find_checkpoint, load_checkpoint_model

    _, _, shards, _ = setup
    raw = yaml.safe_load(TINY.read_text())
    raw["optim"].update({"ema_decay": 0.5, "freeze": ["vit"]})
    raw["log"]["tensorboard"] = False
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml", max_steps=1)
    train(cfg, [shards], tmp_path / "run")

    ckpt = find_checkpoint(tmp_path / "run")
    online, averaged = load_checkpoint_model(ckpt), load_checkpoint_model(ckpt, ema=True)
    start = initial_model(cfg, resolve_model_config(cfg, None, None), None)
    for name, p in start.vit.named_parameters():  # frozen: never moved, not averaged
        assert torch.equal(p, online.vit.get_parameter(name))
        assert torch.equal(p, averaged.vit.get_parameter(name))
    w0, w1 = start.connector.state_dict(), online.connector.state_dict()
    for key, value in averaged.connector.state_dict().items():  # one update: 0.5 w0 + 0.5 w1
        assert not torch.equal(w0[key], w1[key])
        torch.testing.assert_close(value, 0.5 * w0[key] + 0.5 * w1[key], rtol=0, atol=1e-7)


def test_tokenizer_comes_from_the_config_then_init_from_then_the_shipped_one(
    tmp_path: Path,
) -> None:
    from train.data import default_tokenizer_path
    from train.resolve import resolve_tokenizer_path

    bagel = tmp_path / "bagel"
    bagel.mkdir()
    (bagel / "tokenizer.json").write_text("{}")
    cfg = TrainConfig.from_yaml(TINY)
    assert resolve_tokenizer_path(cfg, None, None) == default_tokenizer_path()
    assert resolve_tokenizer_path(cfg, bagel, None) == bagel / "tokenizer.json"
    mine = cfg.model_copy(update={"tokenizer": str(tmp_path / "mine.json")})
    assert resolve_tokenizer_path(mine, bagel, None) == tmp_path / "mine.json"
