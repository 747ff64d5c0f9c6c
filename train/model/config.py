"""Typed, frozen model configuration with named presets (STYLE practice 9).

``ModelConfig`` nests one frozen dataclass per component. Variants derive with
``dataclasses.replace`` (``replace(cfg, llm=replace(cfg.llm, num_layers=4))``); a misspelt key in
``from_dict`` is an error, never silently dropped.

Presets:
    tiny        CPU tests: hidden 64, 2 layers, tiny ViT and a tiny FLUX-structured VAE
    small_100m  ~100M trainable parameters, for the CPU benchmark
    base_1b     ~1B trainable parameters, for the GPU benchmark
    bagel_7b    BAGEL-7B-MoT (Qwen2.5-7B MoT, SigLIP so400m/14 truncated to 26 layers, FLUX VAE)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LLMConfig:
    """Qwen2-style Mixture-of-Transformers decoder (two experts per layer)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    qk_norm: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"llm.hidden_size {self.hidden_size} not divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"llm.num_heads {self.num_heads} not divisible by num_kv_heads")
        if self.head_dim % 2:
            raise ValueError(f"llm head_dim {self.head_dim} must be even for RoPE")
        if self.hidden_size % 4:
            # the 2-D sin-cos position tables split the width into four quarters
            raise ValueError(f"llm.hidden_size {self.hidden_size} must be a multiple of 4")


@dataclass(frozen=True)
class ViTConfig:
    """SigLIP-style NaViT encoder. ``num_layers`` is the number of layers *used* (BAGEL drops
    SigLIP's last layer: 26 of so400m's 27)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    patch_size: int
    max_patches_per_side: int
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"vit.hidden_size {self.hidden_size} not divisible by num_heads")


@dataclass(frozen=True)
class VAEConfig:
    """FLUX autoencoder structure (``ae.safetensors``)."""

    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def __post_init__(self) -> None:
        for mult in self.channel_mult:
            if (self.channels * mult) % 32:
                raise ValueError("vae channel widths must be multiples of 32 (GroupNorm(32))")


@dataclass(frozen=True)
class ModelConfig:
    llm: LLMConfig
    vit: ViTConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    latent_patch_size: int = 2
    max_latent_size: int = 64
    """Latent tokens per side of the latent position table (BAGEL-7B-MoT: 64, i.e. 1024 px)."""
    timestep_shift: float = 1.0
    """s in t' = s*t / (1 + (s-1)*t); paper 4.1 trains with 1.0."""

    @property
    def latent_dim(self) -> int:
        """Width of one latent token: a 2x2 patch of z_channels."""
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def image_stride(self) -> int:
        """Pixels per latent token side (VAE downsampling x latent patch)."""
        return self.vae.downsample * self.latent_patch_size

    # --- presets ---------------------------------------------------------------------------------
    @classmethod
    def tiny(cls) -> ModelConfig:
        return cls(
            llm=LLMConfig(
                vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=128, rope_theta=10_000.0,
            ),
            vit=ViTConfig(
                hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, patch_size=4,
                max_patches_per_side=16,
            ),
            vae=VAEConfig(channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1),
            max_latent_size=8,
        )  # fmt: skip

    @classmethod
    def small_100m(cls) -> ModelConfig:
        return cls(
            llm=LLMConfig(
                vocab_size=32_000, hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                intermediate_size=1408,
            ),
            vit=ViTConfig(
                hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536, patch_size=14,
                max_patches_per_side=70,
            ),
            vae=VAEConfig(channels=64, channel_mult=(1, 1, 2, 2), num_res_blocks=1),
        )  # fmt: skip

    @classmethod
    def base_1b(cls) -> ModelConfig:
        return cls(
            llm=LLMConfig(
                vocab_size=152_064, hidden_size=1536, num_layers=14, num_heads=12, num_kv_heads=2,
                intermediate_size=4096,
            ),
            vit=ViTConfig(
                hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, patch_size=14,
                max_patches_per_side=70,
            ),
        )  # fmt: skip

    @classmethod
    def bagel_7b(cls) -> ModelConfig:
        return cls(
            llm=LLMConfig(
                vocab_size=152_064, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                intermediate_size=18_944, rope_theta=1_000_000.0,
            ),
            vit=ViTConfig(
                hidden_size=1152, num_layers=26, num_heads=16, intermediate_size=4304,
                patch_size=14, max_patches_per_side=70,
            ),
            max_latent_size=64,
        )  # fmt: skip

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        presets = {
            "tiny": cls.tiny,
            "small_100m": cls.small_100m,
            "base_1b": cls.base_1b,
            "bagel_7b": cls.bagel_7b,
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    # --- BAGEL's released configs ----------------------------------------------------------------
    @classmethod
    def from_bagel_dir(cls, path: str | Path) -> ModelConfig:
        """Read ``llm_config.json`` and ``vit_config.json`` of a BAGEL checkpoint directory.

        BAGEL's loaders force ``qk_norm=True`` and untied embeddings and drop SigLIP's last
        layer; we do the same. The VAE widths are read from the tensor shapes in ``ae.safetensors``
        and the latent table side from ``ema.safetensors`` (headers only) when those files are
        there, else FLUX's VAE and BAGEL-7B-MoT's 64. Unsupported variants (rope scaling, sliding
        window) are errors rather than silent changes.
        """
        root = Path(path)
        llm = _read_json(root / "llm_config.json")
        vit = _read_json(root / "vit_config.json")
        if llm.get("rope_scaling") is not None:
            raise ValueError(f"{root / 'llm_config.json'}: rope_scaling is not supported")
        if llm.get("use_sliding_window", False):
            raise ValueError(f"{root / 'llm_config.json'}: use_sliding_window is not supported")
        if llm.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{root / 'llm_config.json'}: hidden_act must be silu")
        if vit.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise ValueError(f"{root / 'vit_config.json'}: hidden_act must be gelu_pytorch_tanh")
        return cls(
            llm=LLMConfig(
                vocab_size=llm["vocab_size"],
                hidden_size=llm["hidden_size"],
                num_layers=llm["num_hidden_layers"],
                num_heads=llm["num_attention_heads"],
                num_kv_heads=llm["num_key_value_heads"],
                intermediate_size=llm["intermediate_size"],
                rope_theta=float(llm.get("rope_theta", 10_000.0)),
                rms_norm_eps=float(llm.get("rms_norm_eps", 1e-6)),
                qk_norm=True,
            ),
            vit=ViTConfig(
                hidden_size=vit["hidden_size"],
                num_layers=vit["num_hidden_layers"] - 1,
                num_heads=vit["num_attention_heads"],
                intermediate_size=vit["intermediate_size"],
                patch_size=vit["patch_size"],
                max_patches_per_side=vit["image_size"] // vit["patch_size"],
                layer_norm_eps=float(vit.get("layer_norm_eps", 1e-6)),
            ),
            vae=_vae_from_checkpoint(root / "ae.safetensors"),
            max_latent_size=_latent_table_side(root / "ema.safetensors"),
        )

    # --- serialisation (the resolved config is saved next to every output) -----------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        sections = {"llm": LLMConfig, "vit": ViTConfig, "vae": VAEConfig}
        kwargs = _strict_kwargs(cls, data, "model")
        for name, section_cls in sections.items():
            if name in kwargs:
                sub = _strict_kwargs(section_cls, kwargs[name], name)
                if "channel_mult" in sub:
                    sub["channel_mult"] = tuple(sub["channel_mult"])
                kwargs[name] = section_cls(**sub)
        return cls(**kwargs)


def _strict_kwargs(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} config keys {unknown}; known keys: {sorted(known)}")
    return dict(data)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a BAGEL checkpoint directory holds it")
    with path.open() as f:
        data: dict[str, Any] = json.load(f)
    return data


def _shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118


def _vae_from_checkpoint(path: Path) -> VAEConfig:
    if not path.is_file():
        return VAEConfig()
    shapes = _shapes(path)
    channels = shapes["encoder.conv_in.weight"][0]
    levels = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down."))
    blocks = 1 + max(int(k.split(".")[4]) for k in shapes if k.startswith("encoder.down.0.block."))
    mult = tuple(
        shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] // channels for i in range(levels)
    )
    return VAEConfig(
        channels=channels,
        channel_mult=mult,
        num_res_blocks=blocks,
        z_channels=shapes["decoder.conv_in.weight"][1],
    )


def _latent_table_side(path: Path) -> int:
    if not path.is_file():
        return 64
    rows = _shapes(path).get("latent_pos_embed.pos_embed", [64 * 64])[0]
    side = round(rows**0.5)
    if side * side != rows:
        raise ValueError(f"{path}: latent_pos_embed.pos_embed has {rows} rows, not a square")
    return side
