"""Parity with BAGEL's official code (github ByteDance-Seed/Bagel) on a tiny random model, fp32 CPU.

Skipped unless ``CHATUMM_BAGEL_SRC`` points at a BAGEL checkout and ``transformers`` (BAGEL's
dependency, 4.49 was used) is importable. BAGEL imports ``flash_attn``; the test provides a
float32 stand-in, and runs BAGEL's ViT attention without its bf16 cast (an fp32 comparison).
Both models get the same weights (ours exported through ``ours_to_bagel``, loaded strictly into
BAGEL's modules) and the same batch; with the same seed they draw the same VAE sample and flow
noise, so CE and MSE sums must agree to 1e-4 per token.

    CHATUMM_BAGEL_SRC=/path/to/Bagel pytest tests/test_model_bagel_parity.py
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tests.model_batches import PackBuilder, dialogue_batch, one_torch_thread  # noqa: F401
from train.model import ChatUMM, ModelConfig
from train.model.bagel_adapter import DERIVED_KEYS, ours_to_bagel

BAGEL_SRC = os.environ.get("CHATUMM_BAGEL_SRC")
pytestmark = pytest.mark.skipif(not BAGEL_SRC, reason="set CHATUMM_BAGEL_SRC to a BAGEL checkout")


def _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *args, causal=False, **kwargs):
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        a, b = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        c, d = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        qq, kk, vv = (t.float().transpose(0, 1)[None] for t in (q[a:b], k[c:d], v[c:d]))
        o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=causal, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


@pytest.fixture(scope="module")
def bagel_modules():
    pytest.importorskip("transformers")
    pytest.importorskip("einops")
    stand_in = types.ModuleType("flash_attn")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    stand_in.flash_attn_varlen_func = _varlen_attention  # type: ignore[attr-defined]
    sys.modules.setdefault("flash_attn", stand_in)
    sys.path.insert(0, str(BAGEL_SRC))
    from modeling.autoencoder import AutoEncoder, AutoEncoderParams
    from modeling.bagel import (
        Bagel,
        BagelConfig,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
        siglip_navit,
    )  # fmt: skip

    def vit_attention_fp32(self, hidden_states, cu_seqlens, max_seqlen, **kwargs):
        n = hidden_states.shape[0]
        q, k, v = (
            proj(hidden_states).view(n, self.num_heads, self.head_dim)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        return self.out_proj(_varlen_attention(q, k, v, cu_seqlens, cu_seqlens).reshape(n, -1))

    siglip_navit.SiglipFlashAttention2.forward = vit_attention_fp32
    return types.SimpleNamespace(
        AutoEncoder=AutoEncoder, AutoEncoderParams=AutoEncoderParams, Bagel=Bagel,
        BagelConfig=BagelConfig, Qwen2Config=Qwen2Config, Qwen2ForCausalLM=Qwen2ForCausalLM,
        SiglipVisionConfig=SiglipVisionConfig, SiglipVisionModel=SiglipVisionModel,
    )  # fmt: skip


def _build_bagel(b, cfg: ModelConfig):
    llm, vit = cfg.llm, cfg.vit
    llm_config = b.Qwen2Config(
        vocab_size=llm.vocab_size, hidden_size=llm.hidden_size,
        intermediate_size=llm.intermediate_size, num_hidden_layers=llm.num_layers,
        num_attention_heads=llm.num_heads, num_key_value_heads=llm.num_kv_heads,
        rope_theta=llm.rope_theta, rms_norm_eps=llm.rms_norm_eps, qk_norm=True,
        layer_module="Qwen2MoTDecoderLayer", tie_word_embeddings=False,
        _attn_implementation="eager",
    )  # fmt: skip
    vit_config = b.SiglipVisionConfig(
        hidden_size=vit.hidden_size, intermediate_size=vit.intermediate_size,
        num_hidden_layers=vit.num_layers, num_attention_heads=vit.num_heads,
        image_size=vit.patch_size * vit.max_patches_per_side, patch_size=vit.patch_size,
        rope=False, _attn_implementation="eager",
    )  # fmt: skip
    vae = cfg.vae
    vae_params = b.AutoEncoderParams(
        resolution=256, in_channels=3, downsample=vae.downsample, ch=vae.channels, out_ch=3,
        ch_mult=list(vae.channel_mult), num_res_blocks=vae.num_res_blocks,
        z_channels=vae.z_channels, scale_factor=vae.scale_factor, shift_factor=vae.shift_factor,
    )  # fmt: skip
    config = b.BagelConfig(
        visual_gen=True, visual_und=True, llm_config=llm_config, vit_config=vit_config,
        vae_config=vae_params, latent_patch_size=cfg.latent_patch_size,
        max_latent_size=cfg.max_latent_size, vit_max_num_patch_per_side=vit.max_patches_per_side,
        connector_act="gelu_pytorch_tanh", timestep_shift=cfg.timestep_shift,
    )  # fmt: skip
    model = b.Bagel(b.Qwen2ForCausalLM(llm_config), b.SiglipVisionModel(vit_config), config)
    model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config)
    return model, b.AutoEncoder(vae_params)


def _bagel_inputs(batch, cfg: ModelConfig) -> dict:
    """BAGEL's forward arguments for our PackedBatch (its real tokens: BAGEL pads inside the
    attention only)."""
    real, stride = batch.real_tokens, cfg.image_stride
    seg, noised = batch.segment_ids_L.tolist(), batch.noised_L.tolist()
    doc = batch.document_ids_L.tolist()
    split_lens, attn_modes, i = [], [], 0
    while i < real:
        j = i
        while j + 1 < real and seg[j + 1] == seg[i] and doc[j + 1] == doc[i]:
            j += 1
        split_lens.append(j - i + 1)
        attn_modes.append("causal" if seg[i] < 0 else ("noise" if noised[i] else "full"))
        i = j + 1
    shapes = [(img.shape[1] // stride, img.shape[2] // stride) for img in batch.vae_images]
    t_tok = batch.timestep_logits_I.repeat_interleave(torch.tensor([h * w for h, w in shapes]))
    height = max(img.shape[1] for img in batch.vae_images)
    width = max(img.shape[2] for img in batch.vae_images)
    padded = torch.zeros(len(batch.vae_images), 3, height, width)
    for n, img in enumerate(batch.vae_images):
        padded[n, :, : img.shape[1], : img.shape[2]] = img
    keep = batch.text_index_N < real
    return dict(
        sequence_length=real, packed_text_ids=batch.text_ids_N[keep],
        packed_text_indexes=batch.text_index_N[keep], sample_lens=list(batch.sample_lens),
        packed_position_ids=batch.position_ids_L[:real], split_lens=split_lens,
        attn_modes=attn_modes, ce_loss_indexes=batch.ce_index_C,
        packed_label_ids=batch.ce_labels_C, packed_vit_tokens=batch.vit_patches_PD,
        packed_vit_token_indexes=batch.vit_index_P,
        packed_vit_position_ids=batch.vit_position_ids_P, vit_token_seqlens=batch.vit_seqlens_V,
        padded_images=padded, patchified_vae_latent_shapes=shapes,
        packed_latent_position_ids=batch.latent_position_ids_M,
        packed_vae_token_indexes=batch.vae_index_M, packed_timesteps=t_tok,
        mse_loss_indexes=batch.vae_index_M[torch.isfinite(t_tok)[: batch.vae_index_M.numel()]],
    )  # fmt: skip


def _mixed_sizes_batch(cfg: ModelConfig):
    b = PackBuilder(cfg, torch.Generator().manual_seed(7))
    b.dialogue().text(3).vae_image(3, 2, noised=False).text(4, supervised=True)
    b.vae_image(2, 3, noised=True).vit_image(3, 3).text(2, supervised=True)
    return b.build(160)


def test_losses_match_bagel_official_code(bagel_modules):
    cfg = ModelConfig.tiny()
    torch.manual_seed(0)
    ours = ChatUMM(cfg)
    with torch.no_grad():  # random values everywhere, the zero-initialised llm2vae included
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    bagel, vae = _build_bagel(bagel_modules, cfg)
    state = ours.state_dict()
    for key in DERIVED_KEYS:
        state[key] = ours.get_submodule(key.rsplit(".", 1)[0]).get_buffer("table")
    bagel.load_state_dict(
        ours_to_bagel({k: v for k, v in state.items() if not k.startswith("vae.")})
    )
    vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")})
    bagel.train(), ours.train()  # BAGEL's training forward; both sample the VAE posterior

    for batch in (dialogue_batch(cfg, seed=0, capacity=128), _mixed_sizes_batch(cfg)):
        data = _bagel_inputs(batch, cfg)
        torch.manual_seed(123)
        with torch.no_grad():
            data["padded_latent"] = vae.encode(data.pop("padded_images"))
            ref = bagel(**data)
        torch.manual_seed(123)
        with torch.no_grad():
            terms = ours(batch, "sdpa")
        assert int(terms.ce_tokens) == len(data["ce_loss_indexes"])
        assert int(terms.mse_tokens) == len(data["mse_loss_indexes"])
        ce_ref, mse_ref = ref["ce"].sum(), ref["mse"].mean(-1).sum()
        assert abs(float(terms.ce_sum - ce_ref)) / terms.ce_tokens < 1e-4, (terms.ce_sum, ce_ref)
        assert abs(float(terms.mse_sum - mse_ref)) / terms.mse_tokens < 1e-4, (
            terms.mse_sum,
            mse_ref,
        )
