"""State-dict adapter between BAGEL's released checkpoint layout and ChatUMM's modules.

BAGEL-7B-MoT ships ``ema.safetensors`` (everything but the VAE, BAGEL's key names) and FLUX's
``ae.safetensors``. The mapping is one table of key templates (data, not code); each placeholder
stands for an explicit set of names, so a key matches at most one rule. The understanding expert
has BAGEL's plain names, the generation expert the ``_moe_gen`` suffix:

    language_model.model.layers.{i}.self_attn.q_proj_moe_gen.weight
        <-> llm.layers.{i}.experts.1.q_proj.weight

``latent_pos_embed.pos_embed`` and ``vit_pos_embed.pos_embed`` are BAGEL's fixed sin-cos tables;
they map to our non-persistent ``*.table`` buffers. Loading drops them (BAGEL's own loader does
too: the model recomputes them from its config); exporting writes the model's tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from train.model.config import ModelConfig

_CHOICES = {
    "i": r"\d+",
    "param": "weight|bias",
    "attn": "q_proj|k_proj|v_proj|o_proj|q_norm|k_norm",
    "ffn": "gate_proj|up_proj|down_proj",
    "vit_attn": "q_proj|k_proj|v_proj|out_proj",
    "n": "1|2",
    "mlp": "0|2",
}

_LM, _VIT = "language_model.model", "vit_model.vision_model"
# (BAGEL template, our template); {sfx} and {e} are filled in per expert below.
_EXPERT_RULES = [
    (_LM + ".layers.{i}.self_attn.{attn}{sfx}.{param}", "llm.layers.{i}.experts.{e}.{attn}.{param}"),
    (_LM + ".layers.{i}.mlp{sfx}.{ffn}.weight", "llm.layers.{i}.experts.{e}.mlp.{ffn}.weight"),
    (_LM + ".layers.{i}.input_layernorm{sfx}.weight", "llm.layers.{i}.experts.{e}.input_norm.weight"),
    (_LM + ".layers.{i}.post_attention_layernorm{sfx}.weight", "llm.layers.{i}.experts.{e}.post_norm.weight"),
    (_LM + ".norm{sfx}.weight", "llm.norms.{e}.weight"),
]  # fmt: skip
_RULES = [
    (_LM + ".embed_tokens.weight", "llm.embed_tokens.weight"),
    ("language_model.lm_head.weight", "llm.lm_head.weight"),
    (_VIT + ".embeddings.patch_embedding.{param}", "vit.patch_embed.{param}"),
    (_VIT + ".embeddings.position_embedding.weight", "vit.pos_embed.weight"),
    (_VIT + ".encoder.layers.{i}.self_attn.{vit_attn}.{param}", "vit.layers.{i}.attn.{vit_attn}.{param}"),
    (_VIT + ".encoder.layers.{i}.layer_norm{n}.{param}", "vit.layers.{i}.norm{n}.{param}"),
    (_VIT + ".encoder.layers.{i}.mlp.fc{n}.{param}", "vit.layers.{i}.mlp.fc{n}.{param}"),
    (_VIT + ".post_layernorm.{param}", "vit.post_norm.{param}"),
    ("connector.fc{n}.{param}", "connector.fc{n}.{param}"),
    ("vae2llm.{param}", "vae2llm.{param}"),
    ("llm2vae.{param}", "llm2vae.{param}"),
    ("time_embedder.mlp.{mlp}.{param}", "time_embedder.mlp.{mlp}.{param}"),
    ("latent_pos_embed.pos_embed", "latent_pos_embed.table"),
    ("vit_pos_embed.pos_embed", "vit_pos_embed.table"),
] + [
    (bagel.replace("{sfx}", sfx), ours.replace("{e}", str(e)))
    for bagel, ours in _EXPERT_RULES
    for e, sfx in enumerate(["", "_moe_gen"])
]  # fmt: skip

DERIVED_KEYS = ("latent_pos_embed.table", "vit_pos_embed.table")
"""Our names of the fixed tables BAGEL stores but ChatUMM recomputes from its config."""
VAE_PREFIX = "vae."


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, choices in _CHOICES.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{choices})")
    return re.compile(pattern)


_TO_OURS = [(_compile(bagel), ours) for bagel, ours in _RULES]
_TO_BAGEL = [(_compile(ours), bagel) for bagel, ours in _RULES]


def _rename(
    state_dict: dict[str, torch.Tensor], rules: list[tuple[re.Pattern[str], str]], source: str
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state_dict.items():
        matches = [(m, target) for pattern, target in rules if (m := pattern.fullmatch(key))]
        if not matches:
            unexpected.append(key)
            continue
        assert len(matches) == 1, f"key {key} matches several adapter rules"
        match, target = matches[0]
        out[target.format(**match.groupdict())] = value
    if unexpected:
        raise KeyError(f"unexpected keys in the {source} state dict: {_listing(unexpected)}")
    return out


def bagel_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BAGEL ``ema.safetensors`` names -> ChatUMM names (values untouched)."""
    return _rename(state_dict, _TO_OURS, "BAGEL")


def ours_to_bagel(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ChatUMM names -> BAGEL names; the exact inverse of ``bagel_to_ours``. VAE keys are not
    part of BAGEL's ``ema.safetensors`` (see ``export_bagel_checkpoint``)."""
    return _rename(state_dict, _TO_BAGEL, "ChatUMM")


def read_bagel_checkpoint(directory: str | Path) -> dict[str, torch.Tensor]:
    """``ema.safetensors`` + ``ae.safetensors`` as one state dict in our names, fixed sin-cos
    tables dropped. Full tensors on CPU, e.g. for ``set_model_state_dict`` on a sharded model."""
    root = Path(directory)
    for name in ("ema.safetensors", "ae.safetensors"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} not found: a BAGEL checkpoint directory holds it"
            )
    ours = bagel_to_ours(load_file(root / "ema.safetensors"))
    for key in DERIVED_KEYS:
        ours.pop(key, None)
    ours.update({VAE_PREFIX + k: v for k, v in load_file(root / "ae.safetensors").items()})
    return ours


def check_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Raise a KeyError naming every missing and unexpected key."""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not fit the model: missing keys {_listing(missing)}; "
            f"unexpected keys {_listing(unexpected)}"
        )


def load_bagel_checkpoint(model: nn.Module, directory: str | Path) -> None:
    """Load BAGEL's released weights into a materialised ChatUMM (after ``to_empty`` if it was
    built on the meta device); values are cast to the model's dtypes."""
    state_dict = read_bagel_checkpoint(directory)
    check_keys(state_dict, model)
    model.load_state_dict(state_dict, strict=True)


def export_bagel_checkpoint(model: nn.Module, directory: str | Path) -> None:
    """Write ``ema.safetensors``, ``ae.safetensors``, ``llm_config.json`` and ``vit_config.json``
    in BAGEL's layout (readable by BAGEL's code and by ``ModelConfig.from_bagel_dir``)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: _full(v) for k, v in model.state_dict().items()}
    for key in DERIVED_KEYS:
        module_name = key.rsplit(".", 1)[0]
        table = model.get_submodule(module_name).get_buffer("table")
        state[key] = _full(table)
    vae = {k[len(VAE_PREFIX) :]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(VAE_PREFIX)}
    save_file(ours_to_bagel(rest), root / "ema.safetensors")
    save_file(vae, root / "ae.safetensors")
    config = model.config
    if isinstance(config, ModelConfig):
        for name, data in bagel_json_configs(config).items():
            (root / name).write_text(json.dumps(data, indent=2) + "\n")


def bagel_json_configs(config: ModelConfig) -> dict[str, dict[str, object]]:
    """``llm_config.json`` and ``vit_config.json`` contents for ``config`` (BAGEL's fields)."""
    llm, vit = config.llm, config.vit
    return {
        "llm_config.json": {
            "model_type": "qwen2",
            "hidden_act": "silu",
            "vocab_size": llm.vocab_size,
            "hidden_size": llm.hidden_size,
            "num_hidden_layers": llm.num_layers,
            "num_attention_heads": llm.num_heads,
            "num_key_value_heads": llm.num_kv_heads,
            "intermediate_size": llm.intermediate_size,
            "rope_theta": llm.rope_theta,
            "rms_norm_eps": llm.rms_norm_eps,
            "tie_word_embeddings": False,
            "qk_norm": llm.qk_norm,
            "layer_module": "Qwen2MoTDecoderLayer",
        },
        "vit_config.json": {
            "model_type": "siglip_vision_model",
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": vit.hidden_size,
            # BAGEL's loaders drop the last layer of the configured encoder
            "num_hidden_layers": vit.num_layers + 1,
            "num_attention_heads": vit.num_heads,
            "intermediate_size": vit.intermediate_size,
            "patch_size": vit.patch_size,
            "image_size": vit.patch_size * vit.max_patches_per_side,
            "layer_norm_eps": vit.layer_norm_eps,
        },
    }


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain contiguous CPU tensor (gathers a DTensor shard if FSDP sharded the parameter)."""
    full_tensor = getattr(tensor, "full_tensor", None)
    if callable(full_tensor):
        tensor = full_tensor()
    return tensor.detach().to("cpu").contiguous()


def _listing(keys: Iterable[str]) -> str:
    keys = list(keys)
    return "[" + ", ".join(keys) + "]" if keys else "none"
