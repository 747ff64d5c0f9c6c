"""The loader's PackedBatch drives the real (tiny) model: the two halves agree on the contract."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import torch
from data_builders import TOKENIZER, random_samples, write_shards

from train.data import DataConfig, ImageTransformConfig, PackedLoader
from train.model.config import ModelConfig
from train.model.model import ChatUMM


def test_packed_batches_train_the_tiny_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = ModelConfig.tiny()
    model_cfg = dataclasses.replace(
        base, llm=dataclasses.replace(base.llm, vocab_size=TOKENIZER.vocab_size)
    )
    patch = model_cfg.vit.patch_size
    data_cfg = DataConfig.tiny(  # grids shared with the model config, as the loop passes them
        vit=ImageTransformConfig(max_side=8 * patch, min_side=4 * patch, stride=patch),
        max_patches_per_side=model_cfg.vit.max_patches_per_side,
        max_latent_size=model_cfg.max_latent_size,
    )
    model = ChatUMM(model_cfg)
    loader = PackedLoader(write_shards(tmp_path, random_samples(16, seed=4)), data_cfg, TOKENIZER)
    for batch in itertools.islice(loader, 2):
        terms = model(batch)
        noised = sum(
            img.shape[1] * img.shape[2] // model_cfg.image_stride**2
            for img, t in zip(batch.vae_images, batch.timestep_logits_I, strict=True)
            if t.isfinite()
        )
        assert int(terms.ce_tokens) == batch.ce_index_C.numel() > 0
        assert int(terms.mse_tokens) == noised > 0
        loss = terms.ce_sum / terms.ce_tokens + terms.mse_sum / terms.mse_tokens
        assert loss.isfinite()
        loss.backward()
