"""The generalized causal attention rule (paper section 2), written once as a ``mask_mod``.

A query token q may attend to a key token k when they belong to the same dialogue and

    (k <= q  or  q and k are in the same image block)      causal, bidirectional inside an image
    and (k is not noised  or  q and k are in the same image block)   noised latents are private

so later turns read history only from text, ViT tokens and clean latents. Padding tokens
(document -1) attend to themselves only, which keeps every softmax row non-empty.

The dense boolean mask (SDPA, the CPU path) and the FlexAttention ``BlockMask`` (the CUDA path)
are both derived from ``generalized_causal_mask_mod``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def generalized_causal_mask_mod(
    document_ids_L: torch.Tensor,
    segment_ids_L: torch.Tensor,
    noised_L: torch.Tensor,
    position_L: torch.Tensor | None = None,
) -> MaskMod:
    """The rule over rows ``q``, ``k`` of the given per-row ids. ``position_L``: the sequence
    position of each row when the rows are a permutation of the sequence (the decoder's
    expert-sorted layout, ``train.model.layout``); default row i is position i."""

    def mask_mod(
        b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        doc_q, doc_k = document_ids_L[q], document_ids_L[k]
        seg_q, seg_k = segment_ids_L[q], segment_ids_L[k]
        pos_q, pos_k = (q, k) if position_L is None else (position_L[q], position_L[k])
        same_block = (seg_q == seg_k) & (seg_q >= 0)
        same_doc = (doc_q == doc_k) & ((doc_q >= 0) | (q == k))
        visible = (pos_k <= pos_q) | same_block
        private = noised_L[k] & ~same_block
        return same_doc & visible & ~private

    return mask_mod


def dense_mask(mask_mod: MaskMod, seq_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[L, L] bool (True = may attend), evaluated from ``mask_mod`` on the full grid."""
    q = torch.arange(seq_len, device=device)[:, None]
    k = torch.arange(seq_len, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=device)
    return mask_mod(zero, zero, q, k)


def block_mask(mask_mod: MaskMod, seq_len: int, device: torch.device | str = "cpu") -> object:
    """FlexAttention ``BlockMask`` for ``mask_mod`` (batch and heads broadcast)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device=device)
