"""Attention backends behind one mask definition.

A mask is built once per batch (outside the layers, STYLE practice 13) from a ``mask_mod``:

* ``"sdpa"``: a dense [L, L] boolean mask from ``train.mask.dense_mask`` and
  ``F.scaled_dot_product_attention``. The CPU path (FlexAttention has no CPU backward in torch 2.13).
* ``"flex"``: a ``BlockMask`` and FlexAttention, compiled on CUDA (the training path). The block
  mask is built with ``_compile=True`` on CUDA so a 64k-token mask never materialises densely.

Shapes: q ``[L, H, Dh]``, k/v ``[L, G, Dh]`` (G key/value heads, grouped-query attention). At
inference the keys also hold a KV cache: k/v ``[K, G, Dh]`` and a dense ``[L, K]`` mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import torch
import torch.nn.functional as F

from train.mask import MaskMod, dense_mask

Backend = Literal["sdpa", "flex"]


@dataclass
class AttentionMask:
    backend: Backend
    seq_len: int
    dense_LL: torch.Tensor | None = None
    block: Any = None  # torch.nn.attention.flex_attention.BlockMask

    @classmethod
    def build(
        cls, mask_mod: MaskMod, seq_len: int, backend: Backend, device: torch.device
    ) -> AttentionMask:
        if seq_len == 0:
            return cls(backend, 0)
        if backend == "sdpa":
            return cls(backend, seq_len, dense_LL=dense_mask(mask_mod, seq_len, device))
        if backend == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            block = create_block_mask(
                mask_mod, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device=device,
                _compile=device.type == "cuda",
            )  # fmt: skip
            return cls(backend, seq_len, block=block)
        raise ValueError(f"unknown attention backend {backend!r}; use 'sdpa' or 'flex'")


def same_segment_mask_mod(segment_ids_T: torch.Tensor) -> MaskMod:
    """Each token attends to the tokens of its own segment (the ViT: one image each)."""

    def mask_mod(
        b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        return segment_ids_T[q] == segment_ids_T[k]

    return mask_mod


@cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def attend(
    q_LHD: torch.Tensor, k_LGD: torch.Tensor, v_LGD: torch.Tensor, mask: AttentionMask
) -> torch.Tensor:
    """Masked softmax attention (scale 1/sqrt(Dh)); returns [L, H, Dh]."""
    if q_LHD.shape[0] == 0:
        return q_LHD.new_empty(q_LHD.shape)
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q_LHD, k_LGD, v_LGD))
    gqa = q.shape[1] != k.shape[1]
    if mask.backend == "sdpa":
        if gqa and q.device.type == "cuda":
            # With a mask, SDPA's GQA path runs the math kernel, which materialises the [H, L, K]
            # scores in fp32; expanded key/value heads keep the memory-efficient kernel.
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
            gqa = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense_LL, enable_gqa=gqa)
    else:
        if q.device.type == "cuda" and torch.compiler.is_compiling():
            # Inside a compiled block Dynamo captures flex_attention itself; tracing through
            # the cached wrapper below only earns a warning.
            from torch.nn.attention.flex_attention import flex_attention as flex
        elif q.device.type == "cuda":
            flex = _compiled_flex()
        else:
            # CPU: the eager (unfused) FlexAttention, used to test the mask against SDPA.
            from torch.nn.attention.flex_attention import flex_attention as flex
        out = flex(q, k, v, block_mask=mask.block, enable_gqa=gqa)
    return out.squeeze(0).transpose(0, 1)
