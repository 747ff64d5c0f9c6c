"""The FLUX autoencoder (encoder and decoder), frozen in ChatUMM.

Module names follow FLUX's ``ae.safetensors`` keys (``encoder.conv_in``,
``encoder.down.{i}.block.{j}.norm1``, ``encoder.down.{i}.downsample.conv``, ``encoder.mid.attn_1.q``,
``decoder.up.{i}.upsample.conv``, ...), so the checkpoint adapter only adds a ``vae.`` prefix.
GroupNorm(32, eps 1e-6), swish, asymmetric (0, 1, 0, 1) zero padding before each stride-2 conv,
one single-head attention block in the middle. ``encode`` returns scaled latents
``scale * (z - shift)``; ``decode`` inverts the scaling.

Shape suffixes: B images, C channels, H/W spatial size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model.config import VAEConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.norm(x_BCHW)
        b, c, hh, ww = h.shape
        q, k, v = (
            conv(h).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v)
        )
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        return x_BCHW + self.proj_out(out.reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: resnet blocks, then an optional resampler (FLUX's ``down.i``/``up.i``)."""

    def __init__(self, widths: list[tuple[int, int]], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(i, o) for i, o in widths])
        if resample is not None:
            self.add_module(name, resample)
        self.resample_name = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.resample_name is not None:
            x = getattr(self, self.resample_name)(x)
        return x


class Middle(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = ResnetBlock(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(3, cfg.channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.channels
        for i, out in enumerate(widths):
            blocks = [(ch if j == 0 else out, out) for j in range(cfg.num_res_blocks)]
            last = i == len(widths) - 1
            self.down.append(Level(blocks, None if last else Downsample(out), "downsample"))
            ch = out
        self.mid = Middle(ch)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, ch, 3, padding=1)
        self.mid = Middle(ch)
        levels: list[Level] = []
        for i in reversed(range(len(widths))):
            out = widths[i]
            blocks = [(ch if j == 0 else out, out) for j in range(cfg.num_res_blocks + 1)]
            levels.insert(0, Level(blocks, Upsample(out) if i else None, "upsample"))
            ch = out
        self.up = nn.ModuleList(levels)  # indexed by resolution level, run from the last
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, images_B3HW: torch.Tensor, sample: bool) -> torch.Tensor:
        """Scaled latents [B, z, H/8, W/8]: a reparameterised sample, or the mean."""
        mean, logvar = self.encoder(images_B3HW).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.cfg.scale_factor * (z - self.cfg.shift_factor)

    def decode(self, latents_BzHW: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents_BzHW / self.cfg.scale_factor + self.cfg.shift_factor)
