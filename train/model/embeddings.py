"""Fixed and learned embeddings shared by the ChatUMM modules.

Shape suffixes as in ``train/batch.py``; here also T = any token count, F = frequencies.

* ``SinCos2D``: the fixed 2-D sin-cos table BAGEL adds to ViT tokens and latent tokens in LLM
  space, indexed by ``row * grid + col``. Width layout per token (BAGEL / MAE convention):
  ``[sin(col*w), cos(col*w), sin(row*w), cos(row*w)]``, each a quarter of the width, with
  ``w_i = 10000^(-i / (D/4))``. Kept as a non-persistent buffer: it is a function of the config,
  recomputed by ``reset_buffers`` (after ``to_empty`` from the meta device).
* ``TimestepEmbedder``: DiT-style; t in [0, 1] (not scaled by 1000, as BAGEL), 256 frequencies
  ``exp(-ln(10000) * i / 128)``, features ``[cos, sin]``, then Linear-SiLU-Linear.
* ``rope_cos_sin``: Qwen2 RoPE tables for 1-D positions ("rotate half" layout).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos_2d_table(dim: int, grid: int) -> torch.Tensor:
    """[grid*grid, dim] float32, row-major over (row, col); computed in float64 like BAGEL."""
    quarter = dim // 4
    omega_F = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    row_T = coords.repeat_interleave(grid)
    col_T = coords.repeat(grid)

    def encode(pos_T: torch.Tensor) -> torch.Tensor:
        angles_TF = pos_T[:, None] * omega_F[None, :]
        return torch.cat([angles_TF.sin(), angles_TF.cos()], dim=1)

    return torch.cat([encode(col_T), encode(row_T)], dim=1).float()


class SinCos2D(nn.Module):
    table: torch.Tensor

    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        self.grid, self.dim = grid, dim
        self.register_buffer("table", torch.empty(grid * grid, dim), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        if self.table.device.type == "meta":
            return
        with torch.no_grad():
            self.table.copy_(sincos_2d_table(self.dim, self.grid))

    def forward(self, position_ids_T: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids_T]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        # Sequential indices 0 and 2 are BAGEL's key names (time_embedder.mlp.0 / mlp.2).
        self.mlp = nn.Sequential(
            nn.Linear(frequencies, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t_T: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs_F = torch.exp(
            -math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t_T.device) / half
        )
        angles_TF = t_T.float()[:, None] * freqs_F[None, :]
        features_TF = torch.cat([torch.cos(angles_TF), torch.sin(angles_TF)], dim=1)
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        return self.mlp(features_TF.to(first.weight.dtype))


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Qwen2 default RoPE inverse frequencies, float32 (as HF computes them)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exponents)


def rope_cos_sin(
    inv_freq: torch.Tensor, position_ids_L: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [L, head_dim] for 1-D positions, computed in float32 then cast."""
    angles = position_ids_L.float()[:, None] * inv_freq.float()[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x_LHD: torch.Tensor, cos_LD: torch.Tensor, sin_LD: torch.Tensor) -> torch.Tensor:
    half = x_LHD.shape[-1] // 2
    rotated = torch.cat([-x_LHD[..., half:], x_LHD[..., :half]], dim=-1)
    return x_LHD * cos_LD[:, None, :] + rotated * sin_LD[:, None, :]
