"""Loading a model to talk to: a training run, one of its checkpoints, or a BAGEL-layout directory.

``--checkpoint`` accepts:

* a training run directory (its newest complete checkpoint) or a checkpoint ``step-N`` (DCP):
  the model, data and tokenizer configs come from the checkpoint's ``config.yaml``, so images
  are resized exactly as in training;
* a directory in BAGEL's released layout (``ema.safetensors``, ``ae.safetensors``,
  ``llm_config.json``, ``vit_config.json``, ``tokenizer.json``): BAGEL-7B-MoT, or what
  ``python -m train export`` wrote. Such a directory holds no data config: the image transforms
  are BAGEL's (VAE sides 512-1024, ViT 224-980) clipped to the model's position tables.

Weights go to CUDA in bf16 when a GPU is there, else stay on the CPU in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from train.data.config import DataConfig, ImageTransformConfig
from train.data.tokenizer import ChatTokenizer, load_tokenizer
from train.data.transforms import Transforms
from train.model import ChatUMM, ModelConfig

BAGEL_FILES = ("ema.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json")


@dataclass
class Assets:
    """Everything a session needs: the model (eval mode), its tokenizer and image transforms."""

    model: ChatUMM
    tokenizer: ChatTokenizer
    transforms: Transforms
    source: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_assets(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    ema: bool = False,
) -> Assets:
    """The model, tokenizer and transforms of ``path`` (see the module docstring)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"{root} does not exist; pass a run directory, a checkpoint or a BAGEL-layout directory"
        )
    dev = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if (root / "ema.safetensors").is_file():
        if ema:
            raise ValueError(
                f"{root} is a BAGEL-layout directory: its weights are already the EMA ones; drop --ema"
            )
        model, tokenizer, data_cfg = _load_bagel_dir(root)
    else:
        model, tokenizer, data_cfg = _load_training_checkpoint(root, ema)
    return Assets(
        prepare_model(model, dev, dtype), tokenizer, Transforms.from_config(data_cfg), root
    )


def prepare_model(model: ChatUMM, device: torch.device, dtype: torch.dtype) -> ChatUMM:
    """Eval mode, no gradients, on ``device``; the weights in ``dtype``, the fixed tables (RoPE
    frequencies, sin-cos positions) left in float32."""
    model = model.to(device=device).eval()
    model.requires_grad_(False)
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(dtype)
    return model


def _load_training_checkpoint(root: Path, ema: bool) -> tuple[ChatUMM, ChatTokenizer, DataConfig]:
    from train.export import find_checkpoint, load_checkpoint_model

    checkpoint = find_checkpoint(root)
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
    model = load_checkpoint_model(checkpoint, ema=ema)
    assert isinstance(model, ChatUMM)
    tokenizer_path = Path(saved["tokenizer"])
    if not tokenizer_path.is_file():
        raise FileNotFoundError(
            f"{checkpoint / 'config.yaml'} names the tokenizer {tokenizer_path}, which is gone; "
            "restore it, or export the run (`python -m train export`) and load that directory"
        )
    return model, load_tokenizer(tokenizer_path), DataConfig.model_validate(saved["data"])


def _load_bagel_dir(root: Path) -> tuple[ChatUMM, ChatTokenizer, DataConfig]:
    from train.model.bagel_adapter import load_bagel_checkpoint

    missing = [name for name in (*BAGEL_FILES, "tokenizer.json") if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {missing} of BAGEL's checkpoint layout")
    cfg = ModelConfig.from_bagel_dir(root)
    with torch.device("meta"):
        model = ChatUMM(cfg)
    model.to_empty(device="cpu")
    with torch.no_grad():
        model.init_weights()  # the fixed buffers; every weight is then loaded
    load_bagel_checkpoint(model, root)
    return model, load_tokenizer(root / "tokenizer.json"), bagel_data_config(cfg)


def bagel_data_config(cfg: ModelConfig) -> DataConfig:
    """BAGEL's image transforms clipped to what the model's position tables hold."""
    vae_stride, vit_stride = cfg.image_stride, cfg.vit.patch_size
    vae_max = min(1024, cfg.max_latent_size * vae_stride)
    vit_max = min(980, cfg.vit.max_patches_per_side * vit_stride)
    return DataConfig.bagel(
        vae=ImageTransformConfig(max_side=vae_max, min_side=min(512, vae_max), stride=vae_stride),
        vit=ImageTransformConfig(max_side=vit_max, min_side=min(224, vit_max), stride=vit_stride),
        vae_downsample=cfg.vae.downsample,
        latent_patch_size=cfg.latent_patch_size,
        max_patches_per_side=cfg.vit.max_patches_per_side,
        max_latent_size=cfg.max_latent_size,
    )
