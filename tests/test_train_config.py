"""The training config: paper defaults, strict keys, the bundled tiny YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import TrainConfig

TINY = Path("train/configs/tiny.yaml")


def test_defaults_are_the_papers_recipe() -> None:
    cfg = TrainConfig()
    o = cfg.optim
    assert (o.lr, o.betas, o.eps, o.weight_decay) == (2e-5, (0.9, 0.95), 1e-15, 0.0)
    assert (o.warmup_steps, o.grad_clip, o.ce_weight, o.mse_weight) == (200, 1.0, 1.0, 1.0)
    assert o.ema_decay is None and o.freeze == ()
    assert cfg.parallel.mixed_precision == "bf16"


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1.0e-4\n  warmup_step: 5\n")
    with pytest.raises(ValueError, match="warmup_step"):
        TrainConfig.from_yaml(bad)


def test_bad_values_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  freeze: [vae]\n")
    with pytest.raises(ValueError, match="freeze"):
        TrainConfig.from_yaml(bad)
    bad.write_text("device: cpu\nparallel:\n  attention: flex\n")
    with pytest.raises(ValueError, match="no backward on CPU"):
        TrainConfig.from_yaml(bad)


def test_tiny_yaml_loads_and_overrides_win() -> None:
    cfg = TrainConfig.from_yaml(TINY, max_steps=7)
    assert cfg.max_steps == 7 and cfg.model.preset == "tiny" and cfg.device == "cpu"
    assert TrainConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError):  # frozen
        cfg.max_steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["tiny", "gpu_1b", "paper_stage1", "paper_stage2"])
def test_bundled_configs_resolve(name: str) -> None:
    from train.resolve import resolve_data_config, resolve_model_config

    cfg = TrainConfig.from_yaml(Path("train/configs") / f"{name}.yaml")
    data = resolve_data_config(cfg, resolve_model_config(cfg, None, None))
    if name.startswith("paper"):
        assert cfg.parallel.num_shard == 32 and cfg.optim.lr == 2e-5 and data.pack_tokens == 65536
