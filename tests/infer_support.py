"""A tiny ChatUMM with random weights and the tiny run's tokenizer and image transforms, for the
inference tests (no checkpoint needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from train.config import TrainConfig
from train.data import Transforms, default_tokenizer_path, load_tokenizer
from train.infer import Assets
from train.model import ChatUMM, ModelConfig
from train.resolve import resolve_data_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_assets(seed: int = 0, scale: float = 0.05) -> Assets:
    """Random values everywhere (the zero-initialised velocity head included), eval mode."""
    cfg = ModelConfig.tiny()
    torch.manual_seed(seed)
    model = ChatUMM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval().requires_grad_(False)
    data_cfg = resolve_data_config(TrainConfig.from_yaml(ROOT / "train/configs/tiny.yaml"), cfg)
    tokenizer = load_tokenizer(default_tokenizer_path())
    return Assets(model, tokenizer, Transforms.from_config(data_cfg), ROOT)
