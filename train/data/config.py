"""Typed, frozen configuration of the data pipeline, with the BAGEL and tiny presets.

``DataConfig.bagel()`` holds BAGEL's image transforms (VAE: sides 512-1024, stride 16; ViT: sides
224-980, stride 14, at most 14*14*9*1024 pixels) and the paper's pack size (61k-64k tokens per
rank). ``DataConfig.tiny()`` is the same pipeline at test sizes. Variants derive with
``config.model_copy(update=...)``; a misspelt key is an error (``extra="forbid"``).

Task weights (see ``train.data.sampling``): ``stage1_task_weights()`` and
``stage2_task_weights()`` are the paper's two presets (section 4.1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# BAGEL's ImageTransform default pixel budget (14 * 14 * 9 * 1024).
BAGEL_MAX_PIXELS = 14 * 14 * 9 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageTransformConfig(_Frozen):
    """Resize so both sides are multiples of ``stride``, the long side at most ``max_side``, the
    short side at least ``min_side`` (when the long side allows) and at most ``max_pixels``."""

    max_side: int = Field(gt=0)
    min_side: int = Field(gt=0)
    stride: int = Field(gt=0)
    max_pixels: int = Field(default=BAGEL_MAX_PIXELS, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ImageTransformConfig:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} exceeds max_side {self.max_side}")
        if self.max_side % self.stride:
            raise ValueError(
                f"max_side {self.max_side} is not a multiple of stride {self.stride}; "
                "pick a max_side the model's patch grid can hold exactly"
            )
        if self.max_pixels < self.stride**2:
            raise ValueError(f"max_pixels {self.max_pixels} is below one patch ({self.stride}^2)")
        return self


class DataConfig(_Frozen):
    pack_tokens: int = Field(gt=0, description="tokens per packed sequence (the capacity L)")
    max_dialogue_tokens: int = Field(
        gt=0, description="a longer dialogue is skipped and counted, never cut"
    )
    buffer_size: int = Field(
        default=64, ge=1, description="dialogues held back to fill packs (overflow buffer)"
    )
    vit: ImageTransformConfig = ImageTransformConfig(max_side=980, min_side=224, stride=14)
    vae: ImageTransformConfig = ImageTransformConfig(max_side=1024, min_side=512, stride=16)
    vae_downsample: int = Field(default=8, gt=0, description="VAE pixels per latent")
    latent_patch_size: int = Field(default=2, gt=0, description="latents per patchified token")
    max_patches_per_side: int = Field(
        default=70, gt=0, description="ViT position ids are row * this + col (model config)"
    )
    max_latent_size: int = Field(
        default=64, gt=0, description="latent position ids are row * this + col (model config)"
    )
    task_weights: dict[str, float] | None = Field(
        default=None, description="task -> weight; None keeps every row (the data's own mix)"
    )
    weight_mode: Literal["mixture", "keep"] = Field(
        default="mixture",
        description="mixture: weights are target proportions of the stream (BAGEL's group "
        "weights); keep: a weight is the fraction of that task's rows kept",
    )
    holdout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="fraction of sample ids held out for evaluation and never trained on "
        "(train.data.sampling.held_out; `python -m train eval --holdout` reads the same ids)",
    )
    seed: int = Field(default=0, ge=0)
    shuffle: bool = Field(default=True, description="shuffle row groups and rows each epoch")
    epochs: int | None = Field(default=None, description="None streams forever (epoch after epoch)")
    num_workers: int = Field(default=0, ge=0, description="DataLoader processes; 0 = in-process")
    prefetch_factor: int = Field(default=2, ge=1, description="packs each worker runs ahead")

    @property
    def vae_stride(self) -> int:
        """Pixels per VAE token side: latent downsample x patchify."""
        return self.vae_downsample * self.latent_patch_size

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.max_dialogue_tokens > self.pack_tokens:
            raise ValueError(
                f"max_dialogue_tokens {self.max_dialogue_tokens} exceeds pack_tokens "
                f"{self.pack_tokens}: a dialogue is never split across packs"
            )
        if self.vae.stride != self.vae_stride:
            raise ValueError(
                f"vae.stride {self.vae.stride} must equal vae_downsample x latent_patch_size "
                f"= {self.vae_stride}, or latents would not tile the image"
            )
        if self.vit.max_side // self.vit.stride > self.max_patches_per_side:
            raise ValueError(
                f"ViT images reach {self.vit.max_side // self.vit.stride} patches per side, "
                f"more than max_patches_per_side {self.max_patches_per_side}"
            )
        if self.vae.max_side // self.vae.stride > self.max_latent_size:
            raise ValueError(
                f"VAE images reach {self.vae.max_side // self.vae.stride} latent tokens per side, "
                f"more than max_latent_size {self.max_latent_size}"
            )
        for task, weight in (self.task_weights or {}).items():
            if weight < 0:
                raise ValueError(f"task weight of {task!r} is negative ({weight})")
        if self.task_weights is not None and not any(self.task_weights.values()):
            raise ValueError("every task weight is 0: nothing would ever be sampled")
        return self

    @classmethod
    def bagel(cls, **overrides: object) -> DataConfig:
        """The paper's sizes: 64k-token packs per rank, BAGEL's transforms and model grid."""
        base: dict[str, object] = {"pack_tokens": 65_536, "max_dialogue_tokens": 65_536}
        return cls.model_validate({**base, **overrides})

    @classmethod
    def tiny(cls, **overrides: object) -> DataConfig:
        """Test sizes: 56-px ViT images (4x4 patches), 64-px VAE images (4x4 tokens)."""
        base: dict[str, object] = {
            "pack_tokens": 512,
            "max_dialogue_tokens": 512,
            "buffer_size": 8,
            "vit": ImageTransformConfig(max_side=56, min_side=28, stride=14, max_pixels=56 * 56),
            "vae": ImageTransformConfig(max_side=64, min_side=32, stride=16, max_pixels=64 * 64),
            "max_patches_per_side": 4,
            "max_latent_size": 4,
        }
        return cls.model_validate({**base, **overrides})
