"""Typed, frozen generation options (text and image), validated on construction.

Image defaults are BAGEL's published ones: ``ImageOptions.t2i()`` for a context without images,
``ImageOptions.edit()`` once an image (uploaded or generated) is in the context. Variants derive
with ``dataclasses.replace`` (``with_overrides`` turns an unknown field into a clear error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

RenormType = Literal["global", "channel", "text_channel"]
RENORM_TYPES: tuple[str, ...] = ("global", "channel", "text_channel")


@dataclass(frozen=True)
class TextOptions:
    max_tokens: int = 512
    """Tokens of one text part at most; a part that reaches it is closed with ``<|im_end|>``."""
    temperature: float = 0.0
    """0 decodes greedily; otherwise softmax(logits / temperature) is sampled."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class ImageOptions:
    steps: int = 50
    """Points of the timestep schedule (BAGEL's ``num_timesteps``): steps - 1 Euler updates."""
    timestep_shift: float = 3.0
    """s in t' = s t / (1 + (s - 1) t), applied to the uniform schedule from 1 to 0."""
    cfg_text_scale: float = 4.0
    """Text guidance: full context against the context without its last text part (1 = off)."""
    cfg_img_scale: float = 1.0
    """Image guidance: against the context's text parts alone (1 = off)."""
    cfg_interval: tuple[float, float] = (0.4, 1.0)
    """Guidance applies at the steps with lo < t <= hi (t = 1 is pure noise)."""
    cfg_renorm_type: RenormType = "global"
    """Rescale the guided velocity to at most the unguided norm: over the whole image
    (``global``), per token (``channel``), or per token after the text guidance only
    (``text_channel``)."""
    cfg_renorm_min: float = 0.0
    """Lower bound of that rescaling factor (1 disables the renormalisation)."""
    size: tuple[int, int] | None = None
    """(width, height) in pixels; None: the last image in the context, else the largest square
    the model's VAE transform allows. Rounded to the model's latent grid."""

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError(
                f"steps must be at least 2 (the schedule's two ends), got {self.steps}"
            )
        if self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0, got {self.timestep_shift}")
        for name in ("cfg_text_scale", "cfg_img_scale"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (1 turns that guidance off)")
        lo, hi = self.cfg_interval
        if not 0 <= lo <= hi <= 1:
            raise ValueError(
                f"cfg_interval must satisfy 0 <= lo <= hi <= 1, got {self.cfg_interval}"
            )
        if self.cfg_renorm_type not in RENORM_TYPES:
            raise ValueError(
                f"cfg_renorm_type must be one of {RENORM_TYPES}, got {self.cfg_renorm_type!r}"
            )
        if not 0 <= self.cfg_renorm_min <= 1:
            raise ValueError(f"cfg_renorm_min must be in [0, 1], got {self.cfg_renorm_min}")
        if self.size is not None and min(self.size) <= 0:
            raise ValueError(f"size must be positive (width, height), got {self.size}")

    @classmethod
    def t2i(cls) -> ImageOptions:
        """BAGEL's text-to-image defaults."""
        return cls()

    @classmethod
    def edit(cls) -> ImageOptions:
        """BAGEL's editing defaults (an image is in the context)."""
        return cls(cfg_img_scale=2.0, cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel")

    @classmethod
    def for_context(cls, has_images: bool, overrides: dict[str, Any] | None = None) -> ImageOptions:
        base = cls.edit() if has_images else cls.t2i()
        return base.with_overrides(overrides or {})

    def with_overrides(self, overrides: dict[str, Any]) -> ImageOptions:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown image options {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)
