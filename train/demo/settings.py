"""The demo's settings panel: the inference knobs, BAGEL's defaults, checked as one.

Three knobs differ between BAGEL's text-to-image and editing defaults: the image guidance scale,
the guidance interval and the renorm type. Left at ``auto`` they follow the context as the
command line does (``ImageOptions.for_context``: text-to-image until an image is in the
conversation, editing after); set, they apply to every image. The others always apply.

The seed seeds each reply: the same message after the same history with the same settings draws
the same image, and a new seed takes effect at the next message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.infer import ImageOptions, TextOptions
from train.infer.options import RENORM_TYPES

AUTO = "auto"
T2I, EDIT = ImageOptions.t2i(), ImageOptions.edit()
TEXT = TextOptions()


@dataclass(frozen=True)
class Settings:
    """What the panel holds; ``auto``: BAGEL's default for the context."""

    steps: int = T2I.steps
    cfg_text_scale: float = T2I.cfg_text_scale
    cfg_img_scale: str = AUTO
    cfg_interval: str = AUTO
    cfg_renorm_type: str = AUTO
    cfg_renorm_min: float = T2I.cfg_renorm_min
    timestep_shift: float = T2I.timestep_shift
    seed: int = 0
    temperature: float = TEXT.temperature
    top_p: float = TEXT.top_p
    max_tokens: int = TEXT.max_tokens
    max_parts: int = 3
    """Parts (texts, images) of one answer at most (``Chat``'s ``max_parts``)."""

    def text_options(self) -> TextOptions:
        return TextOptions(
            max_tokens=int(self.max_tokens), temperature=self.temperature, top_p=self.top_p
        )

    def image_overrides(self) -> dict[str, Any]:
        """The ``Chat.image_overrides`` these settings stand for (raises ``ValueError`` naming
        the knob that is wrong)."""
        overrides: dict[str, Any] = {
            "steps": int(self.steps),
            "cfg_text_scale": float(self.cfg_text_scale),
            "cfg_renorm_min": float(self.cfg_renorm_min),
            "timestep_shift": float(self.timestep_shift),
        }
        if not _is_auto(self.cfg_img_scale):
            try:
                overrides["cfg_img_scale"] = float(self.cfg_img_scale)
            except ValueError:
                raise ValueError(
                    f"image guidance scale {self.cfg_img_scale!r}: a number, or auto"
                ) from None
        if not _is_auto(self.cfg_interval):
            overrides["cfg_interval"] = parse_interval(self.cfg_interval)
        if self.cfg_renorm_type != AUTO:
            if self.cfg_renorm_type not in RENORM_TYPES:
                raise ValueError(
                    f"renorm type {self.cfg_renorm_type!r}: use auto or one of {RENORM_TYPES}"
                )
            overrides["cfg_renorm_type"] = self.cfg_renorm_type
        ImageOptions().with_overrides(overrides)  # the options' own checks, now
        return overrides


def _is_auto(value: str) -> bool:
    return value.strip().lower() in ("", AUTO)


def parse_interval(text: str) -> tuple[float, float]:
    """``"0.4, 1"`` -> (0.4, 1.0)."""
    lo, sep, hi = text.partition(",")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise ValueError(
            f"guidance interval {text!r}: write it as 'start, end' (e.g. 0.4, 1) or auto"
        ) from None


def from_panel(values: dict[str, Any]) -> Settings:
    """Settings from the panel's widget values (``None`` where a number box was cleared)."""
    required = {"steps", "cfg_text_scale", "cfg_renorm_min", "timestep_shift", "seed"}
    required |= {"temperature", "top_p", "max_tokens", "max_parts"}
    missing = sorted(name for name in required if values.get(name) is None)
    if missing:
        raise ValueError(f"settings {missing} are empty; give each a number")
    settings = Settings(**values)
    settings.text_options()
    settings.image_overrides()
    if settings.max_parts < 1:
        raise ValueError(f"parts per answer must be at least 1, got {settings.max_parts}")
    return settings
