"""SigLIP-style NaViT encoder over variable-resolution images packed together, and the
connector into the LLM width. Architecture only.

* patch embedding: a linear layer over (p, p, c)-ordered patch pixels (SigLIP's conv kernel
  permuted to (out, kh, kw, c), as BAGEL stores it);
* a learned position table indexed by ``row * max_patches_per_side + col``;
* pre-norm encoder layers (LayerNorm, multi-head attention with biases, GELU-tanh MLP); each image
  attends only to itself (the mask is built by the caller from ``vit_seqlens_V``);
* truncated as BAGEL does (the config's ``num_layers`` is the number used), then the post-layernorm.

Shape suffixes: P patches, D width, H heads, Dh head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model.attention import AttentionMask, attend
from train.model.config import ViTConfig


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class ViTAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.head_dim = d // cfg.num_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x_PD: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        q, k, v = (proj(x_PD).unflatten(-1, (-1, self.head_dim)) for proj in projections)
        return self.out_proj(attend(q, k, v, mask).flatten(1))


class ViTMLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class ViTLayer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = ViTAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = ViTMLP(cfg)

    def forward(self, x_PD: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        x_PD = x_PD + self.attn(self.norm1(x_PD), mask)
        return x_PD + self.mlp(self.norm2(x_PD))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        patch_dim = cfg.patch_size * cfg.patch_size * 3
        self.patch_embed = nn.Linear(patch_dim, cfg.hidden_size)
        self.pos_embed = nn.Embedding(cfg.max_patches_per_side**2, cfg.hidden_size)
        self.layers = nn.ModuleList([ViTLayer(cfg) for _ in range(cfg.num_layers)])
        self.post_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(
        self, patches_PD: torch.Tensor, position_ids_P: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        x_PD = self.patch_embed(patches_PD.to(self.patch_embed.weight.dtype))
        x_PD = x_PD + self.pos_embed(position_ids_P)
        for layer in self.layers:
            x_PD = layer(x_PD, mask)
        return self.post_norm(x_PD)


class Connector(nn.Module):
    """Two-layer MLP from the ViT width into the LLM width (BAGEL's ``connector``)."""

    def __init__(self, vit_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vit_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))
