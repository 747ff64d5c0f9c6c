"""Packing: the PackedBatch fields, the overflow buffer, packing efficiency."""

from __future__ import annotations

import random

import pytest
import torch
from data_builders import TOKENIZER, random_samples, serialize

from train.data import PackBuffer, pack


def test_packed_batch_fields_are_consistent() -> None:
    dialogues = [serialize(s, seed=i) for i, s in enumerate(random_samples(5, seed=1))]
    real = sum(d.num_tokens for d in dialogues)
    batch = pack(dialogues, capacity=real + 37, pad_id=TOKENIZER.special.pad)
    L = batch.seq_len
    assert real + 37 == L and batch.real_tokens == real
    assert batch.sample_lens == [d.num_tokens for d in dialogues]
    assert batch.tasks == [d.task for d in dialogues]
    # every position is exactly one of: text (padding included), ViT token, latent token
    every = torch.cat([batch.text_index_N, batch.vit_index_P, batch.vae_index_M]).sort().values
    assert torch.equal(every, torch.arange(L))
    assert batch.text_ids_N.numel() == batch.text_index_N.numel()
    # dtypes of the contract
    assert batch.document_ids_L.dtype == torch.int32 and batch.segment_ids_L.dtype == torch.int32
    assert batch.noised_L.dtype == torch.bool and batch.vit_seqlens_V.dtype == torch.int32
    for name in ("position_ids_L", "expert_ids_L", "text_ids_N", "ce_index_C", "vae_index_M"):
        assert getattr(batch, name).dtype == torch.int64, name
    # padding: document -1, text id pad, position 0, no loss
    pad = torch.arange(real, L)
    assert (batch.document_ids_L[pad] == -1).all() and (batch.position_ids_L[pad] == 0).all()
    assert (batch.text_ids_N[-37:] == TOKENIZER.special.pad).all()
    assert batch.ce_index_C.max() < real
    # each dialogue's positions restart at 0; segment ids are unique across the pack
    starts = torch.tensor([0, *batch.sample_lens]).cumsum(0)[:-1]
    assert (batch.position_ids_L[starts] == 0).all()
    offset, seen = 0, set()
    for i, d in enumerate(dialogues):
        doc = batch.document_ids_L[offset : offset + d.num_tokens]
        assert (doc == i).all()
        ids = set(batch.segment_ids_L[offset : offset + d.num_tokens].unique().tolist()) - {-1}
        assert len(ids) == sum(b.is_image for b in d.blocks) and not ids & seen
        seen |= ids
        offset += d.num_tokens
    # one VAE image per occurrence; latent tokens per image = its grid
    n_latents = sum(img.shape[1] * img.shape[2] // 256 for img in batch.vae_images)
    assert n_latents == batch.vae_index_M.numel() == batch.latent_position_ids_M.numel()
    assert len(batch.vae_images) == batch.timestep_logits_I.numel()
    assert batch.vit_patches_PD.shape[0] == int(batch.vit_seqlens_V.sum())


def test_pack_refuses_overflow() -> None:
    d = serialize(random_samples(1)[0])
    with pytest.raises(ValueError, match="do not fit"):
        pack([d, d], capacity=d.num_tokens)


def test_buffer_packs_oldest_first_then_best_fit_and_never_overflows() -> None:
    buf: PackBuffer[int] = PackBuffer(capacity=100, size=3, tokens=lambda n: n)
    assert buf.push(60) is None and buf.push(50) is None and buf.push(30) is None
    assert buf.push(45) == [60, 30]  # oldest (60), then the largest that fits (30 of 50/30/45)
    assert buf.push(10) is None
    assert buf.drain() == [[50, 45], [10]]
    with pytest.raises(ValueError, match="cannot fit"):
        buf.push(101)


def test_buffer_packs_every_item_exactly_once() -> None:
    rng = random.Random(0)
    items = [rng.randint(1, 500) for _ in range(2000)]
    buf: PackBuffer[tuple[int, int]] = PackBuffer(capacity=1024, size=16, tokens=lambda x: x[1])
    packs = [p for it in enumerate(items) if (p := buf.push(it)) is not None] + buf.drain()
    assert sorted(i for p in packs for i, _ in p) == list(range(len(items)))
    assert all(sum(n for _, n in p) <= 1024 for p in packs)
    filled = sum(items) / (1024 * len(packs))
    assert filled > 0.97, filled
