"""BAGEL checkpoint adapter, configs, and building on the meta device (tiny preset)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.model_batches import dialogue_batch, one_torch_thread  # noqa: F401
from train.model import ChatUMM, ModelConfig
from train.model.bagel_adapter import (
    bagel_to_ours,
    export_bagel_checkpoint,
    load_bagel_checkpoint,
    ours_to_bagel,
)


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig.tiny()


@pytest.fixture(scope="module")
def bagel_dir(tmp_path_factory, cfg):
    """A tiny checkpoint directory in BAGEL's released layout, written by our exporter."""
    torch.manual_seed(1)
    model = ChatUMM(cfg)
    directory = tmp_path_factory.mktemp("bagel")
    export_bagel_checkpoint(model, directory)
    return directory, model


def test_bagel_layout_has_bagels_key_names(bagel_dir, cfg):
    directory, _ = bagel_dir
    keys = set(load_file(directory / "ema.safetensors"))
    last = cfg.llm.num_layers - 1
    for key in [
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
        "language_model.model.norm.weight",
        "language_model.model.norm_moe_gen.weight",
        f"language_model.model.layers.{last}.self_attn.q_proj.bias",
        f"language_model.model.layers.{last}.self_attn.q_proj_moe_gen.weight",
        f"language_model.model.layers.{last}.self_attn.k_norm_moe_gen.weight",
        f"language_model.model.layers.{last}.self_attn.o_proj_moe_gen.weight",
        f"language_model.model.layers.{last}.mlp_moe_gen.gate_proj.weight",
        f"language_model.model.layers.{last}.input_layernorm_moe_gen.weight",
        f"language_model.model.layers.{last}.post_attention_layernorm.weight",
        "vit_model.vision_model.embeddings.patch_embedding.weight",
        "vit_model.vision_model.embeddings.position_embedding.weight",
        "vit_model.vision_model.encoder.layers.0.self_attn.out_proj.bias",
        "vit_model.vision_model.encoder.layers.0.layer_norm2.weight",
        "vit_model.vision_model.post_layernorm.bias",
        "connector.fc1.weight",
        "vae2llm.weight",
        "llm2vae.bias",
        "time_embedder.mlp.0.weight",
        "time_embedder.mlp.2.bias",
        "latent_pos_embed.pos_embed",
        "vit_pos_embed.pos_embed",
    ]:
        assert key in keys, key
    assert not any("moe_gen" in k and "language_model" not in k for k in keys)
    ae = set(load_file(directory / "ae.safetensors"))
    for key in [
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.0.downsample.conv.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.conv_out.bias",
        "decoder.up.0.block.1.conv2.weight",
        "decoder.up.3.upsample.conv.weight",
        "decoder.mid.block_2.norm2.bias",
    ]:
        assert key in ae, key


def test_bagel_to_ours_to_bagel_is_exact(bagel_dir):
    directory, _ = bagel_dir
    bagel = load_file(directory / "ema.safetensors")
    back = ours_to_bagel(bagel_to_ours(bagel))
    assert back.keys() == bagel.keys()
    assert all(torch.equal(back[k], bagel[k]) for k in bagel)


def test_unexpected_key_is_named():
    with pytest.raises(KeyError, match=r"language_model\.model\.layers\.0\.mlp_moe_und\.up"):
        bagel_to_ours({"language_model.model.layers.0.mlp_moe_und.up_proj.weight": torch.ones(1)})
    with pytest.raises(KeyError, match=r"llm\.layers\.0\.experts\.2\.q_proj\.weight"):
        ours_to_bagel({"llm.layers.0.experts.2.q_proj.weight": torch.ones(1)})


def test_missing_key_is_named(bagel_dir, tmp_path):
    directory, _ = bagel_dir
    ema = load_file(directory / "ema.safetensors")
    del ema["language_model.model.layers.1.mlp_moe_gen.down_proj.weight"]
    save_file(ema, tmp_path / "ema.safetensors")
    (tmp_path / "ae.safetensors").write_bytes((directory / "ae.safetensors").read_bytes())
    with pytest.raises(KeyError, match=r"missing keys \[llm\.layers\.1\.experts\.1\.mlp\.down"):
        load_bagel_checkpoint(ChatUMM(ModelConfig.tiny()), tmp_path)


def test_meta_build_then_load_reproduces_the_losses(bagel_dir, cfg):
    directory, source = bagel_dir
    with torch.device("meta"):
        model = ChatUMM(cfg)
    assert all(p.is_meta for p in model.parameters())
    assert all(b.is_meta for b in model.buffers())
    model.to_empty(device="cpu")
    model.init_weights()  # recomputes the sin-cos tables and RoPE frequencies
    load_bagel_checkpoint(model, directory)
    for name, buffer in source.named_buffers():
        torch.testing.assert_close(model.get_buffer(name), buffer, rtol=0, atol=0)

    batch = dialogue_batch(cfg)
    source.eval(), model.eval()
    torch.manual_seed(0)
    expected = source(batch)
    torch.manual_seed(0)
    got = model(batch)
    for field in dataclasses.fields(expected):
        torch.testing.assert_close(getattr(got, field.name), getattr(expected, field.name))


def test_config_read_from_bagel_dir(bagel_dir, cfg):
    directory, _ = bagel_dir
    assert ModelConfig.from_bagel_dir(directory) == cfg


def test_bagel_7b_config_from_released_json(tmp_path):
    # the fields of BAGEL-7B-MoT's llm_config.json / vit_config.json that we read
    llm = {
        "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
        "num_hidden_layers": 28, "num_key_value_heads": 4, "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06, "vocab_size": 152064, "hidden_act": "silu",
        "max_position_embeddings": 32768, "use_sliding_window": False, "tie_word_embeddings": False,
    }  # fmt: skip
    vit = {
        "hidden_size": 1152, "image_size": 980, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "patch_size": 14,
    }  # fmt: skip
    (tmp_path / "llm_config.json").write_text(json.dumps(llm))
    (tmp_path / "vit_config.json").write_text(json.dumps(vit))
    assert ModelConfig.from_bagel_dir(tmp_path) == ModelConfig.bagel_7b()
    llm["rope_scaling"] = {"type": "yarn", "factor": 4.0}
    (tmp_path / "llm_config.json").write_text(json.dumps(llm))
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelConfig.from_bagel_dir(tmp_path)


def test_config_presets_and_strict_dict():
    for name in ("tiny", "small_100m", "base_1b", "bagel_7b"):
        cfg = ModelConfig.preset(name)
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    data = ModelConfig.tiny().to_dict()
    data["llm"]["num_layer"] = 3
    with pytest.raises(ValueError, match="num_layer"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="num_kv_heads"):
        dataclasses.replace(ModelConfig.tiny().llm, num_kv_heads=3)
