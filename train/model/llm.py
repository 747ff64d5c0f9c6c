"""Qwen2-style Mixture-of-Transformers decoder (BAGEL's MoT LLM), architecture only.

Every layer holds two experts, ``experts[0]`` = understanding (text, markers, ViT tokens) and
``experts[1]`` = generation (VAE latent tokens). An expert owns its input norm, q/k/v/o
projections (bias on q/k/v), per-head q/k RMSNorms, post-attention norm and SwiGLU MLP; one
attention over all the tokens is shared. Tokens are hard-routed through ``ExpertRouting.apply``
-- the only place that knows about experts (STYLE practice 11): the decoder splits the rows
into one part per expert, each layer runs each expert on its part, and the parts are joined
at the end. In training the rows arrive sorted by expert (``train.model.layout``), so the parts
are views; rows in any other order are gathered per expert and put back.

At inference (``train/infer``) the same layers run new tokens against a KV cache: each layer
hands its new rotated keys and values to a ``LayerKV`` and attends over what it returns (the
cached context followed by the new tokens); the mask then has one row per new token and one
column per key. Training passes no cache.

Shape suffixes: L tokens, K keys (cached + new), D model width, H query heads, G key/value
heads, Dh head width, E experts, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from train.model.attention import AttentionMask, attend
from train.model.config import LLMConfig
from train.model.embeddings import apply_rope, rope_cos_sin, rope_inv_freq

NUM_EXPERTS = 2
UNDERSTANDING, GENERATION = 0, 1


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class ExpertRouting:
    """Which rows of one forward each expert takes.

    Contiguous (training's layout, ``train.model.layout``): the rows come sorted by expert,
    expert ``e`` owning the ``sizes_E[e]`` rows after those of the experts before it; ``split``
    returns views of the runs and ``join`` concatenates. Gathered (rows in any other order, e.g.
    an inference chunk with an image block between its markers): ``split`` gathers each expert's
    rows (``index_E``) and ``join`` puts them back in row order (``restore_L``).

    Between ``split`` and ``join`` the decoder keeps one tensor per expert, so the residual
    stream, norms, projections and MLPs never move rows; only the attention, which mixes all
    rows, needs q/k/v joined. Every expert runs, on an empty part if it has no tokens, so every
    parameter is in the graph of every step (FSDP needs the same parameters used on all ranks)."""

    sizes_E: tuple[int, ...]
    index_E: list[torch.Tensor] | None = None
    restore_L: torch.Tensor | None = None  # row of each token in the concatenated parts

    @classmethod
    def contiguous(cls, sizes_E: Sequence[int]) -> ExpertRouting:
        if len(sizes_E) != NUM_EXPERTS or min(sizes_E) < 0:
            raise ValueError(f"sizes_E must hold {NUM_EXPERTS} token counts, got {sizes_E}")
        return cls(tuple(int(n) for n in sizes_E))

    @classmethod
    def from_expert_ids(cls, expert_ids_L: torch.Tensor) -> ExpertRouting:
        """The routing of rows in sequence order; contiguous when they are already sorted."""
        check_expert_ids(expert_ids_L)
        sizes_E = torch.bincount(expert_ids_L, minlength=NUM_EXPERTS).tolist()
        if bool((expert_ids_L[1:] >= expert_ids_L[:-1]).all()):
            return cls.contiguous(sizes_E)
        index_E = [torch.nonzero(expert_ids_L == e).squeeze(1) for e in range(NUM_EXPERTS)]
        order = torch.cat(index_E)
        restore_L = torch.empty_like(order)
        restore_L[order] = torch.arange(order.numel(), device=order.device)
        return cls(tuple(sizes_E), index_E, restore_L)

    def split(self, x_L: torch.Tensor, rows_E: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Each expert's rows of ``x_L``. ``rows_E``: the run lengths, default ``sizes_E``; a
        compiled block passes its parts' row counts, which Dynamo treats as token dimensions
        (symbolic) rather than as constants to guard on."""
        if self.index_E is None:
            return list(x_L.split(list(self.sizes_E if rows_E is None else rows_E)))
        return [x_L[idx] for idx in self.index_E]

    def join(self, parts_E: Sequence[torch.Tensor]) -> torch.Tensor:
        """The inverse of ``split``: all rows, in row order."""
        joined = torch.cat(list(parts_E))
        return joined if self.restore_L is None else joined[self.restore_L]


def check_expert_ids(expert_ids_L: torch.Tensor) -> None:
    if not expert_ids_L.numel():
        return
    lo, hi = torch.stack(torch.aminmax(expert_ids_L)).tolist()
    if lo < 0 or hi >= NUM_EXPERTS:
        raise ValueError(
            f"expert_ids_L must hold ids in [0, {NUM_EXPERTS}), "
            f"got {expert_ids_L.unique().tolist()}"
        )


class LayerKV(Protocol):
    """One decoder layer's view of a KV cache (implemented by ``train.infer.cache``)."""

    def extend(self, k_LGD: torch.Tensor, v_LGD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the new tokens' rotated keys and values; return the keys and values they attend
        over, [K, G, Dh]: the cached ones, then these."""
        ...


class Expert(nn.Module):
    """One expert's weights in one decoder layer."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        d, dh = cfg.hidden_size, cfg.head_dim
        self.input_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, cfg.num_heads * dh, bias=True)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * dh, bias=True)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * dh, bias=True)
        self.q_norm: nn.Module = RMSNorm(dh, cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(dh, cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()
        self.o_proj = nn.Linear(cfg.num_heads * dh, d, bias=False)
        self.post_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp = SwiGLU(d, cfg.intermediate_size)
        self.head_dim = dh

    def qkv(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.input_norm(x_TD)
        q = self.q_norm(self.q_proj(h).unflatten(-1, (-1, self.head_dim)))
        k = self.k_norm(self.k_proj(h).unflatten(-1, (-1, self.head_dim)))
        v = self.v_proj(h).unflatten(-1, (-1, self.head_dim))
        return q, k, v

    def out(self, attn_TD: torch.Tensor) -> torch.Tensor:
        return self.o_proj(attn_TD)

    def ffn(self, x_TD: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_norm(x_TD))


class DecoderLayer(nn.Module):
    """One MoT layer on the rows of each expert (``x_E``, from ``ExpertRouting.split``)."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.experts = nn.ModuleList([Expert(cfg) for _ in range(NUM_EXPERTS)])

    def forward(
        self,
        x_E: list[torch.Tensor],
        routing: ExpertRouting,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: AttentionMask,
        kv: LayerKV | None = None,
    ) -> list[torch.Tensor]:
        experts = cast(list[Expert], list(self.experts))
        qkv_E = [expert.qkv(x_TD) for expert, x_TD in zip(experts, x_E, strict=True)]
        q_LHD, k_KGD, v_KGD = (routing.join([qkv[i] for qkv in qkv_E]) for i in range(3))
        cos, sin = rope
        q_LHD, k_KGD = apply_rope(q_LHD, cos, sin), apply_rope(k_KGD, cos, sin)
        if kv is not None:
            k_KGD, v_KGD = kv.extend(k_KGD, v_KGD)
        attn_LHD = attend(q_LHD, k_KGD, v_KGD, mask)
        attn_E = routing.split(attn_LHD.flatten(1), [x_TD.shape[0] for x_TD in x_E])
        x_E = [x + e.out(a) for e, x, a in zip(experts, x_E, attn_E, strict=True)]
        return [x + e.ffn(x) for e, x in zip(experts, x_E, strict=True)]


class MoTDecoder(nn.Module):
    """Token embedding, MoT decoder layers, final norm per expert and the LM head."""

    inv_freq: torch.Tensor

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norms = nn.ModuleList(
            [RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) for _ in range(NUM_EXPERTS)]
        )
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", torch.empty(cfg.head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        if self.inv_freq.device.type == "meta":
            return
        with torch.no_grad():
            self.inv_freq.copy_(rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta))

    def forward(
        self,
        x_LD: torch.Tensor,
        routing: ExpertRouting,
        position_ids_L: torch.Tensor,
        mask: AttentionMask,
        kv: Sequence[LayerKV] | None = None,
    ) -> torch.Tensor:
        """Final hidden states [L, D] (after each expert's final norm); ``kv``: one cache view
        per layer, at inference."""
        rope = rope_cos_sin(self.inv_freq, position_ids_L, x_LD.dtype)
        x_E = routing.split(x_LD)
        for i, layer in enumerate(self.layers):
            x_E = layer(x_E, routing, rope, mask, None if kv is None else kv[i])
        return routing.join([norm(x) for norm, x in zip(self.norms, x_E, strict=True)])
