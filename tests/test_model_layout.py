"""The decoder's layout (train/model/layout.py): real tokens only, grouped by expert.

Judged against the layout it replaced -- the whole padded sequence in sequence order, each
expert gathering its rows -- which is still what ``ExpertRouting.from_expert_ids`` does for rows
in sequence order: same hidden states (1e-6, fp32), no FLOP spent on padding.
"""

from __future__ import annotations

import pytest
import torch

from bench.bench_flops import executed_flops
from tests.model_batches import PackBuilder, dialogue_batch, one_torch_thread  # noqa: F401
from tests.test_model_forward import _perturb
from train.batch import PackedBatch
from train.mask import dense_mask, generalized_causal_mask_mod
from train.model import ChatUMM, ModelConfig
from train.model.attention import AttentionMask
from train.model.layout import ExpertLayout
from train.model.llm import GENERATION, ExpertRouting

TOL = {"rtol": 1e-6, "atol": 1e-6}  # fp32; only the summation order differs


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig.tiny()


@pytest.fixture(scope="module")
def model(cfg: ModelConfig) -> ChatUMM:
    """Training's initialisation (the experts' weights differ, so a mix-up shows), with a
    velocity head that is not zero. Eval mode: the VAE posterior mean, no sampling."""
    torch.manual_seed(0)
    model = ChatUMM(cfg).eval()
    _perturb(model.llm2vae, seed=2)
    return model


def test_layout_keeps_real_tokens_grouped_by_expert_in_sequence_order(cfg):
    batch = dialogue_batch(cfg, capacity=96)
    layout = ExpertLayout.of(batch)
    real = (batch.document_ids_L >= 0).nonzero().squeeze(1)
    assert layout.rows == real.numel() == batch.real_tokens < batch.seq_len
    assert sorted(layout.order_R.tolist()) == real.tolist()
    experts = batch.expert_ids_L[layout.order_R]
    assert layout.sizes_E == (int((experts == 0).sum()), int((experts == 1).sum()))
    assert torch.equal(experts, experts.sort().values)  # one run per expert
    for e in (0, 1):
        positions = layout.order_R[experts == e]
        assert torch.equal(positions, positions.sort().values)  # sequence order inside a run
    assert torch.equal(layout.row_L[layout.order_R], torch.arange(layout.rows))
    assert (layout.row_L[batch.document_ids_L < 0] == -1).all()


def test_mask_over_decoder_rows_is_the_sequence_mask_permuted(cfg):
    batch = dialogue_batch(cfg, capacity=96)
    order = ExpertLayout.of(batch).order_R
    ids = (batch.document_ids_L, batch.segment_ids_L, batch.noised_L)
    sequence_LL = dense_mask(generalized_causal_mask_mod(*ids), batch.seq_len)
    rows = generalized_causal_mask_mod(*(t[order] for t in ids), position_L=order)
    assert torch.equal(dense_mask(rows, order.numel()), sequence_LL[order][:, order])


def _sequence_order_hidden(model: ChatUMM, batch: PackedBatch, noise_MC: torch.Tensor):
    """The decoder as it ran before ``ExpertLayout``: every position of the padded pack, in
    sequence order, each expert gathering its rows and scattering them back."""
    latents = model._latents(batch, noise_MC)
    t_M = latents.t_M[:, None]
    noised_MC = (1 - t_M) * latents.clean_MC + t_M * latents.noise_MC
    x_LD = torch.zeros(batch.seq_len, model.config.llm.hidden_size)
    x_LD[batch.text_index_N] = model.llm.embed_tokens(batch.text_ids_N)
    x_LD[batch.vit_index_P] = model.embed_vit(
        batch.vit_patches_PD, batch.vit_position_ids_P, batch.vit_seqlens_V
    )
    x_LD[batch.vae_index_M] = model.embed_latents(
        noised_MC, latents.t_I, latents.image_M, batch.latent_position_ids_M
    )
    mask_mod = generalized_causal_mask_mod(
        batch.document_ids_L, batch.segment_ids_L, batch.noised_L
    )
    mask = AttentionMask.build(mask_mod, batch.seq_len, "sdpa", torch.device("cpu"))
    routing = ExpertRouting.from_expert_ids(batch.expert_ids_L)
    assert routing.index_E is not None  # the rows are not sorted: the gathering path
    return model.llm(x_LD, routing, batch.position_ids_L, mask)


def test_hidden_states_equal_the_padded_sequence_order_decoder(model, cfg):
    batch = dialogue_batch(cfg, capacity=96)
    noise_MC = torch.randn(batch.vae_index_M.numel(), cfg.latent_dim)
    with torch.no_grad():
        expected_LD = _sequence_order_hidden(model, batch, noise_MC)
        hidden_LD, _ = model.hidden_states(batch, "sdpa", noise_MC)
    real = batch.document_ids_L >= 0
    torch.testing.assert_close(hidden_LD[real], expected_LD[real], **TOL)
    assert (hidden_LD[~real] == 0).all()  # padding never ran


def test_losses_and_gradients_equal_without_padding(model, cfg):
    """The padded pack and the same dialogues unpadded: same losses, same gradients."""
    padded = dialogue_batch(cfg, capacity=96)
    unpadded = dialogue_batch(cfg, capacity=padded.real_tokens)
    results = []
    for batch in (padded, unpadded):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        terms = model(batch)
        (terms.ce_sum + terms.mse_sum).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((terms.ce_sum.detach(), terms.mse_sum.detach(), *grads))
    model.zero_grad(set_to_none=True)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_padding_costs_no_flops(model, cfg):
    unpadded = dialogue_batch(cfg, capacity=59)
    padded = dialogue_batch(cfg, capacity=200)
    assert unpadded.real_tokens == padded.real_tokens == unpadded.seq_len == 59
    with_padding = executed_flops(model, padded)
    without = executed_flops(model, unpadded)
    assert with_padding == without
    assert with_padding["decoder"] > 0 and with_padding["attention"] > 0


def test_a_pack_without_images_gives_every_expert_a_gradient(cfg):
    """No latent rows: the generation expert runs on an empty part, so its parameters still
    get (zero) gradients, as FSDP needs on every rank."""
    b = PackBuilder(cfg).dialogue().text(5).text(6, supervised=True)
    batch = b.build(24)
    model = ChatUMM(cfg).train()
    assert ExpertLayout.of(batch).sizes_E[GENERATION] == 0
    terms = model(batch)
    (terms.ce_sum + terms.mse_sum).backward()
    generation = model.llm.layers[0].experts[GENERATION]
    assert all(p.grad is not None and not p.grad.any() for p in generation.parameters())
    assert model.llm.layers[0].experts[0].mlp.up_proj.weight.grad.abs().sum() > 0


def _varied_pack(cfg: ModelConfig, seed: int) -> PackedBatch:
    """An edit-like dialogue and a chat, with lengths drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def n(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=gen))

    b = PackBuilder(cfg, gen).dialogue().text(n(2, 9)).vit_image(2, n(2, 4))
    b.text(n(2, 6), supervised=True).vae_image(2, 2, noised=True)
    b.vae_image(2, 2, noised=False, image=b.vae[-1][0]).text(n(2, 7), supervised=True)
    b.dialogue().text(n(2, 9)).text(n(2, 9), supervised=True)
    return b.build(128)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled FlexAttention needs CUDA")
def test_compiled_flex_blocks_on_cuda_match_sdpa_and_stop_compiling(cfg):
    from train.metrics import CompileCounter
    from train.parallelize import apply_compile

    torch.manual_seed(0)
    reference = ChatUMM(cfg).cuda().train()
    model = ChatUMM(cfg).cuda().train()
    model.load_state_dict(reference.state_dict())
    apply_compile(model)
    compiles = CompileCounter()
    per_pack = []
    for seed in range(6):
        batch = _varied_pack(cfg, seed).to("cuda")
        torch.manual_seed(seed)
        flex = model(batch, attention="flex")
        (flex.ce_sum + flex.mse_sum).backward()
        per_pack.append(compiles.read())
        torch.manual_seed(seed)
        sdpa = reference(batch, attention="sdpa")
        torch.testing.assert_close(flex.ce_sum, sdpa.ce_sum, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(flex.mse_sum, sdpa.mse_sum, rtol=2e-3, atol=2e-3)
    assert len({_varied_pack(cfg, s).real_tokens for s in range(6)}) > 3
    assert per_pack[0] > 0 and per_pack[2:] == [0, 0, 0, 0], per_pack


def test_a_loss_position_on_padding_is_refused(cfg):
    batch = dialogue_batch(cfg, capacity=96)
    batch.ce_index_C[-1] = batch.seq_len - 1  # a padding position
    with pytest.raises(ValueError, match="ce_index_C points at padding"):
        ChatUMM(cfg)(batch)
