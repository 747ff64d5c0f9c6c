"""ChatUMM forward on CPU (tiny preset): expert routing, attention backends, gradient flow."""

from __future__ import annotations

import pytest
import torch

from tests.model_batches import dialogue_batch, one_torch_thread  # noqa: F401
from train.mask import dense_mask, generalized_causal_mask_mod
from train.model import ChatUMM, ModelConfig
from train.model.attention import AttentionMask, attend
from train.model.embeddings import apply_rope, rope_cos_sin
from train.model.llm import DecoderLayer, ExpertRouting, MoTDecoder

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig.tiny()


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (norm weights and zero-initialised heads included) so that
    a mix-up between the two experts cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if p.ndim == 1 else 0.0))


def _reference_layer(layer: DecoderLayer, x, expert_ids, rope, mask):
    """The same layer written as an explicit loop: every expert on every token, then each token
    keeps its own expert's result."""

    def pick(outputs):
        chosen = outputs[0].clone()
        for e, out in enumerate(outputs):
            rows = expert_ids == e
            chosen[rows] = out[rows]
        return chosen

    qkv = [expert.qkv(x) for expert in layer.experts]
    q, k, v = (pick([t[i] for t in qkv]) for i in range(3))
    cos, sin = rope
    attn = attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, mask).flatten(1)
    x = x + pick([expert.out(attn) for expert in layer.experts])
    return x + pick([expert.ffn(x) for expert in layer.experts])


def test_expert_routing_equals_per_expert_loop(cfg):
    batch = dialogue_batch(cfg)
    decoder = MoTDecoder(cfg.llm)
    _perturb(decoder)
    x = torch.randn(batch.seq_len, cfg.llm.hidden_size)
    mask_mod = generalized_causal_mask_mod(
        batch.document_ids_L, batch.segment_ids_L, batch.noised_L
    )
    mask = AttentionMask("sdpa", batch.seq_len, dense_LL=dense_mask(mask_mod, batch.seq_len))
    routing = ExpertRouting.from_expert_ids(batch.expert_ids_L)
    rope = rope_cos_sin(decoder.inv_freq, batch.position_ids_L, x.dtype)
    assert 0 < int(batch.expert_ids_L.sum()) < batch.seq_len  # both experts have tokens

    routed = decoder(x, routing, batch.position_ids_L, mask)
    ref = x
    for layer in decoder.layers:
        ref = _reference_layer(layer, ref, batch.expert_ids_L, rope, mask)
    finals = [norm(ref) for norm in decoder.norms]
    ref = torch.where(batch.expert_ids_L[:, None] == 1, finals[1], finals[0])
    torch.testing.assert_close(routed, ref, rtol=1e-5, atol=1e-5)


def _seeded(fn, *args):
    torch.manual_seed(0)
    return fn(*args)


def test_attention_backends_agree_forward(cfg):
    model = ChatUMM(cfg).eval()
    # 200 tokens: not a multiple of FlexAttention's 128-token blocks
    batch = dialogue_batch(cfg, capacity=200)
    with torch.no_grad():
        # the same noise for the noised latents in both calls
        hidden_sdpa, _ = _seeded(model.hidden_states, batch, "sdpa")
        hidden_flex, _ = _seeded(model.hidden_states, batch, "flex")
    real = batch.document_ids_L >= 0
    torch.testing.assert_close(hidden_flex[real], hidden_sdpa[real], rtol=1e-5, atol=1e-5)


def test_gradients_reach_both_experts_vit_connector_not_vae(cfg):
    model = ChatUMM(cfg).train()
    _perturb(model.llm2vae)
    terms = model(dialogue_batch(cfg))
    assert terms.ce_tokens > 0 and terms.mse_tokens > 0
    (terms.ce_sum + terms.mse_sum).backward()

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    layer = model.llm.layers[0]
    trained = {
        "understanding expert": layer.experts[0],
        "generation expert": layer.experts[1],
        "generation expert MLP": layer.experts[1].mlp,
        "ViT": model.vit.layers[0],
        "ViT patch embedding": model.vit.patch_embed,
        "connector": model.connector,
        "vae2llm": model.vae2llm,
        "llm2vae": model.llm2vae,
        "time embedder": model.time_embedder,
        "token embedding": model.llm.embed_tokens,
    }
    for name, module in trained.items():
        assert grad_norm(module) > 0, f"no gradient reached the {name}"
    assert all(not p.requires_grad and p.grad is None for p in model.vae.parameters())


def test_clean_latents_are_mean_in_eval_and_sampled_in_train(cfg):
    model = ChatUMM(cfg)
    batch = dialogue_batch(cfg)
    model.eval()
    first = model._latents(batch).clean_MC
    torch.testing.assert_close(model._latents(batch).clean_MC, first, rtol=0, atol=0)
    model.train()
    assert not torch.equal(model._latents(batch).clean_MC, first)
    # the clean copy of the generated image is the same image: same latents in eval mode
    latents = model.eval()._latents(batch)
    noised, clean = (latents.clean_MC[latents.image_M == i] for i in (0, 1))
    torch.testing.assert_close(noised, clean)
    assert latents.t_I[0] > 0 and latents.t_I[1] == 0


def test_inconsistent_batch_names_the_field(cfg):
    batch = dialogue_batch(cfg)
    batch.vae_index_M = batch.vae_index_M[:-1]
    with pytest.raises(ValueError, match="vae_index_M"):
        ChatUMM(cfg)(batch)
