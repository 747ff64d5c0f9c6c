"""The generalized causal mask of packed batches against a brute-force reference of the rules."""

from __future__ import annotations

import random

import pytest
import torch
from data_builders import TOKENIZER, random_samples, sample, serialize

from train.data import pack
from train.mask import block_mask, dense_mask, generalized_causal_mask_mod


def packed(samples, capacity: int | None = None):
    dialogues = [serialize(s, seed=i) for i, s in enumerate(samples)]
    batch = pack(dialogues, capacity=capacity, pad_id=TOKENIZER.special.pad)
    return dialogues, batch


def reference_mask(dialogues, length: int) -> torch.Tensor:
    """The rules, token by token: same dialogue; causal, or both in one image block; and a
    noised block is seen only from inside itself. Padding sees itself only."""
    owner: list[tuple[int, int, str]] = []  # (dialogue, block number or -1, block kind)
    for di, d in enumerate(dialogues):
        for bi, b in enumerate(d.blocks):
            owner += [(di, bi if b.is_image else -1, b.kind)] * (b.stop - b.start)
    mask = torch.zeros(length, length, dtype=torch.bool)
    for q in range(length):
        if q >= len(owner):
            mask[q, q] = True
            continue
        dq, bq, _ = owner[q]
        for k in range(len(owner)):
            dk, bk, kind_k = owner[k]
            same_block = bq >= 0 and bq == bk
            if dq != dk:
                continue
            if kind_k == "vae_noised" and not same_block:
                continue
            mask[q, k] = k <= q or same_block
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_equals_brute_force_reference_on_random_packs(seed: int) -> None:
    rng = random.Random(seed)
    rich = sample(rng.choice(["t_i_in_n", "ti_ti_i1_n"]), seed)  # uploads, history, distractors
    samples = [*random_samples(3, seed=seed), rich]
    dialogues, batch = packed(samples, capacity=2048)
    mask_mod = generalized_causal_mask_mod(
        batch.document_ids_L, batch.segment_ids_L, batch.noised_L
    )
    assert torch.equal(
        dense_mask(mask_mod, batch.seq_len), reference_mask(dialogues, batch.seq_len)
    )


def test_noised_latents_of_a_turn_are_invisible_later_and_the_clean_copy_is_visible() -> None:
    dialogues, batch = packed([sample("t_i_in_n", seed=7), sample("ti_ti_i1_n", seed=8)])
    mask = dense_mask(
        generalized_causal_mask_mod(batch.document_ids_L, batch.segment_ids_L, batch.noised_L),
        batch.seq_len,
    )
    offset, checked = 0, 0
    for d in dialogues:
        for b in d.blocks:
            if b.kind != "vae_noised":
                continue
            start, stop = offset + b.start, offset + b.stop
            later = torch.arange(stop, offset + d.num_tokens)
            assert not mask[later][:, start:stop].any()  # no later token reads the noise
            assert mask[start:stop, start:stop].all()  # bidirectional inside the block
            copies = [c for c in d.blocks if c.image == b.image and c.kind in ("vae_clean", "vit")]
            for c in copies:  # the clean latents and ViT tokens are history for later tokens
                after = torch.arange(offset + c.stop, offset + d.num_tokens)
                assert mask[after][:, offset + c.start : offset + c.stop].all()
            checked += 1
        offset += d.num_tokens
    assert checked == 3 + 2  # two history images + answer, one history image + answer


def test_dialogues_in_a_pack_do_not_see_each_other() -> None:
    _, batch = packed(random_samples(4, seed=3), capacity=2048)
    mask = dense_mask(
        generalized_causal_mask_mod(batch.document_ids_L, batch.segment_ids_L, batch.noised_L),
        batch.seq_len,
    )
    doc = batch.document_ids_L
    cross = (doc[:, None] != doc[None, :]) & mask
    assert not cross.any()
    pad = (doc < 0).nonzero().flatten()
    assert torch.equal(mask[pad].sum(1), torch.ones(len(pad), dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention BlockMask needs CUDA")
def test_flex_attention_with_the_block_mask_matches_dense_sdpa() -> None:
    from torch.nn.attention.flex_attention import flex_attention
    from torch.nn.functional import scaled_dot_product_attention

    _, batch = packed(random_samples(6, seed=5), capacity=2048)
    batch = batch.to("cuda")
    mask_mod = generalized_causal_mask_mod(
        batch.document_ids_L, batch.segment_ids_L, batch.noised_L
    )
    q, k, v = torch.randn(3, 1, 2, batch.seq_len, 64, device="cuda").unbind(0)
    flex = flex_attention(q, k, v, block_mask=block_mask(mask_mod, batch.seq_len, device="cuda"))
    dense = scaled_dot_product_attention(
        q, k, v, attn_mask=dense_mask(mask_mod, batch.seq_len, "cuda")
    )
    torch.testing.assert_close(flex, dense, atol=2e-3, rtol=2e-3)
