"""From a ``TrainConfig`` to the concrete model and data configs a run uses, and back to text.

The data pipeline must agree with the model on the image grids (ViT patch size and position
table, VAE stride and latent table); those fields are filled from the model config, and a value
set in ``data.overrides`` that disagrees is an error rather than a silent mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from torch import nn

from train.checkpoint import CheckpointInfo
from train.config import FreezeTarget, TrainConfig

if TYPE_CHECKING:
    from train.batch import PackedBatch
    from train.data import DataConfig
    from train.model import ModelConfig


def resolve_model_config(
    cfg: TrainConfig, init_from: Path | None, resume_from: CheckpointInfo | None
) -> ModelConfig:
    """The architecture: the checkpoint's when resuming, BAGEL's with ``--init-from``, else the
    preset; ``model.overrides`` replace fields on it."""
    from train.model import ModelConfig

    if resume_from is not None:
        saved = yaml.safe_load((resume_from.path / "config.yaml").read_text(encoding="utf-8"))
        if saved["train"]["model"] != cfg.model.model_dump(mode="json"):
            raise ValueError(
                f"the config's model section {cfg.model.model_dump(mode='json')} differs from "
                f"the one {resume_from.path} was trained with {saved['train']['model']}; "
                "resume with the original config"
            )
        return ModelConfig.from_dict(saved["model"])
    base = (
        ModelConfig.from_bagel_dir(init_from)
        if init_from is not None
        else ModelConfig.preset(cfg.model.preset)
    )
    if not cfg.model.overrides:
        return base
    merged = _deep_merge(base.to_dict(), cfg.model.overrides)
    return ModelConfig.from_dict(merged)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _deep_merge(base[key], value)
        else:
            out[key] = value
    return out


def resolve_tokenizer_path(
    cfg: TrainConfig, init_from: Path | None, resume_from: CheckpointInfo | None
) -> Path:
    """The checkpoint's tokenizer when resuming; else ``cfg.tokenizer``; else the BAGEL
    directory's with ``--init-from``; else the small tokenizer shipped in train/assets."""
    from train.data import default_tokenizer_path

    if resume_from is not None:
        saved = yaml.safe_load((resume_from.path / "config.yaml").read_text(encoding="utf-8"))
        return Path(saved["tokenizer"])
    if cfg.tokenizer is not None:
        return Path(cfg.tokenizer)
    if init_from is not None and (Path(init_from) / "tokenizer.json").is_file():
        return Path(init_from) / "tokenizer.json"
    return default_tokenizer_path()


def resolve_data_config(cfg: TrainConfig, model_cfg: ModelConfig) -> DataConfig:
    from train.data import DataConfig

    derived: dict[str, Any] = {
        "vae_downsample": model_cfg.vae.downsample,
        "latent_patch_size": model_cfg.latent_patch_size,
        "max_patches_per_side": model_cfg.vit.max_patches_per_side,
        "max_latent_size": model_cfg.max_latent_size,
    }
    overrides = dict(cfg.data.overrides)
    for key, value in derived.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(
                f"data.overrides.{key}={overrides[key]} disagrees with the model ({value}); "
                "drop it, it is taken from the model config"
            )
    preset = DataConfig.tiny() if cfg.data.preset == "tiny" else DataConfig.bagel()
    fields = {**preset.model_dump(), **overrides, **derived}
    # The image transforms' strides follow the model too (ViT patch, VAE stride x patchify).
    fields["vit"] = {**dict(fields["vit"]), "stride": model_cfg.vit.patch_size}
    fields["vae"] = {**dict(fields["vae"]), "stride": model_cfg.image_stride}
    try:
        return DataConfig.model_validate(fields)
    except ValueError as err:
        raise ValueError(f"data config does not fit the model: {err}") from None


def resolved_config_text(
    cfg: TrainConfig, model_cfg: ModelConfig, data_cfg: DataConfig, tokenizer: Path
) -> str:
    """What a checkpoint records: the training config, the resolved model and data configs and
    the tokenizer file."""
    doc = {
        "train": cfg.model_dump(mode="json"),
        "model": _jsonable(model_cfg.to_dict()),
        "data": data_cfg.model_dump(mode="json"),
        "tokenizer": str(Path(tokenizer).resolve()),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def apply_freeze(model: nn.Module, targets: Sequence[FreezeTarget]) -> None:
    """Freeze the named parts (the VAE is always frozen by the model itself).

    ``understanding_expert`` follows BAGEL's ``freeze_und``: the token embedding, the
    understanding expert's weights in every layer and its final norm."""
    llm: Any = model.llm
    for target in targets:
        if target == "llm":
            llm.requires_grad_(False)
        elif target == "vit":
            model.vit.requires_grad_(False)
        elif target == "understanding_expert":
            from train.model.llm import UNDERSTANDING

            llm.embed_tokens.requires_grad_(False)
            llm.norms[UNDERSTANDING].requires_grad_(False)
            for layer in llm.layers:
                layer.experts[UNDERSTANDING].requires_grad_(False)


def _llm_matmul_params(model_cfg: ModelConfig) -> int:
    """Parameters one token multiplies through in one decoder stack (one expert per layer)."""
    c = model_cfg.llm
    d, dh = c.hidden_size, c.head_dim
    attn = d * c.num_heads * dh + 2 * d * c.num_kv_heads * dh + c.num_heads * dh * d
    return c.num_layers * (attn + 3 * d * c.intermediate_size)


def flops_per_token(model_cfg: ModelConfig, packs: Sequence[PackedBatch]) -> float:
    """Training FLOPs per real token (forward + backward = 3 x forward), averaged over packs.

    Counts the LLM's matmuls (6 N), its attention over the tokens each query really sees
    (documents are causal: a token of a length-l document sees l/2 keys on average), the LM
    head on CE positions and the ViT on its patches. The frozen VAE's encoder is not counted."""
    c, v = model_cfg.llm, model_cfg.vit
    n_llm = _llm_matmul_params(model_cfg)
    attn_width = c.num_layers * c.num_heads * c.head_dim
    n_vit = v.num_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
    flops = 0.0
    tokens = 0
    for pack in packs:
        lens = pack.sample_lens
        real = sum(lens)
        pairs = sum(n * (n + 1) / 2 for n in lens)  # attended (query, key) pairs
        flops += 6 * n_llm * real + 12 * attn_width * pairs
        flops += 6 * c.hidden_size * c.vocab_size * int(pack.ce_index_C.numel())
        flops += 6 * n_vit * int(pack.vit_patches_PD.shape[0])
        tokens += real
    return flops / max(tokens, 1)
