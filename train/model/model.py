"""ChatUMM: BAGEL's unified model (MoT LLM + SigLIP NaViT + frozen FLUX VAE), architecture and
losses only. Parallelism, activation checkpointing and compile are applied from outside.

``forward(batch)`` on one ``PackedBatch`` (``train/batch.py``):

1. Build the attention masks once: the generalized causal mask over the sequence (``train.mask``)
   and a one-image-per-block mask for the ViT.
2. Embed the three token kinds into one [L, D] sequence:
   text   ``llm.embed_tokens(text_ids_N)``
   ViT    ``connector(vit(patches)) + sincos_2d(vit position)``
   latent ``vae2llm(x_t) + time_embedder(t) + sincos_2d(latent position)`` where ``x0`` is the
          VAE latent (frozen, no grad; sampled in train mode, the mean in eval), 2x2-patchified in
          (p, p, c) order, ``t = shift(sigmoid(timestep_logit))`` per image (0 for clean images),
          ``x_t = (1 - t) x0 + t * noise`` with ``noise = torch.randn_like(x0)`` (the caller's RNG).
3. Run the MoT decoder on the real tokens grouped by expert (``train.model.layout``: padding
   never enters it; each expert works on a contiguous run of rows), then put the hidden states
   back in sequence order.
4. Losses (``LossTerms``, sums and counts): CE of ``lm_head`` at ``ce_index_C`` against
   ``ce_labels_C``; MSE of ``llm2vae`` at the latent tokens with t > 0 against the velocity
   ``noise - x0``, averaged over the latent channels per token. ``token_losses`` returns the
   same terms per token (``TokenLosses``), with the noise optionally given, for evaluation.

As in BAGEL, all VAE images of the batch are zero-padded to the largest and encoded as one batch
(so latents, and the RNG draws, match BAGEL's training exactly).

Inference (``train.infer``) builds its token chunks from the same public pieces: ``embed_vit``,
``embed_latents``, ``latent_tokens`` / ``decode_latent_tokens``, and ``llm`` with a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from train.batch import PackedBatch
from train.mask import generalized_causal_mask_mod
from train.model.attention import AttentionMask, same_segment_mask_mod
from train.model.config import ModelConfig
from train.model.embeddings import SinCos2D, TimestepEmbedder
from train.model.layout import ExpertLayout
from train.model.llm import ExpertRouting, MoTDecoder, RMSNorm
from train.model.losses import LossTerms
from train.model.vae import AutoEncoder
from train.model.vit import Connector, ViT

INIT_STD = 0.02  # Qwen2's initializer_range


@dataclass
class Latents:
    """The VAE side of one batch: clean latent tokens x0 and their noise (float32, [M, C]),
    t per image occurrence [I] (0 for clean images) and the image of each latent token [M]."""

    clean_MC: torch.Tensor
    noise_MC: torch.Tensor
    t_I: torch.Tensor
    image_M: torch.Tensor

    @property
    def t_M(self) -> torch.Tensor:
        return self.t_I[self.image_M]

    @property
    def velocity_MC(self) -> torch.Tensor:
        """The rectified-flow target, noise - x0 (BAGEL: v = dx_t/dt, data to noise)."""
        return self.noise_MC - self.clean_MC


@dataclass
class TokenLosses:
    """The unreduced losses of one batch: ``forward`` sums them into ``LossTerms``."""

    logits_CV: torch.Tensor
    """float32 LM-head logits at ``ce_index_C``."""
    ce_C: torch.Tensor
    """Cross-entropy of each CE position against ``ce_labels_C``."""
    has_mse_M: torch.Tensor
    """bool. Latent tokens with t > 0 (noised images): the ones with a flow-matching loss."""
    mse_K: torch.Tensor
    """MSE (mean over the latent channels) of each latent token where ``has_mse_M``, in order."""


class ChatUMM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.llm.hidden_size
        self.llm = MoTDecoder(config.llm)
        self.vit = ViT(config.vit)
        self.connector = Connector(config.vit.hidden_size, d)
        self.vit_pos_embed = SinCos2D(config.vit.max_patches_per_side, d)
        self.vae = AutoEncoder(config.vae)
        self.vae.requires_grad_(False)
        self.vae2llm = nn.Linear(config.latent_dim, d)
        self.llm2vae = nn.Linear(d, config.latent_dim)
        self.time_embedder = TimestepEmbedder(d)
        self.latent_pos_embed = SinCos2D(config.max_latent_size, d)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh weights and recomputed fixed buffers (also after ``to_empty`` from meta)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD)
            elif isinstance(module, (nn.Conv2d, nn.GroupNorm, nn.LayerNorm, RMSNorm)):
                module.reset_parameters()
            reset_buffers = getattr(module, "reset_buffers", None)
            if callable(reset_buffers):
                reset_buffers()
        # BAGEL zero-initialises the velocity head
        for param in self.llm2vae.parameters():
            nn.init.zeros_(param)

    def forward(self, batch: PackedBatch, attention: Literal["sdpa", "flex"] = "sdpa") -> LossTerms:
        terms = self.token_losses(batch, attention)
        return LossTerms(
            ce_sum=terms.ce_C.sum(),
            ce_tokens=torch.tensor(
                float(batch.ce_index_C.numel()), dtype=torch.float32, device=terms.ce_C.device
            ),
            mse_sum=terms.mse_K.sum(),
            mse_tokens=terms.has_mse_M.sum().to(torch.float32),
        )

    def token_losses(
        self,
        batch: PackedBatch,
        attention: Literal["sdpa", "flex"] = "sdpa",
        noise_MC: torch.Tensor | None = None,
    ) -> TokenLosses:
        """The losses of every supervised token, unreduced (``forward`` sums them; evaluation
        reads them per dialogue). ``noise_MC`` replaces the flow-matching noise draw."""
        hidden_LD, latents = self.hidden_states(batch, attention, noise_MC)

        logits_CV = self.llm.lm_head(hidden_LD[batch.ce_index_C]).float()
        ce_C = F.cross_entropy(logits_CV, batch.ce_labels_C, reduction="none")

        has_mse_M = latents.t_M > 0
        pred_KC = self.llm2vae(hidden_LD[batch.vae_index_M[has_mse_M]]).float()
        target_KC = latents.velocity_MC[has_mse_M]
        mse_K = (pred_KC - target_KC).pow(2).mean(dim=-1)
        return TokenLosses(logits_CV=logits_CV, ce_C=ce_C, has_mse_M=has_mse_M, mse_K=mse_K)

    def hidden_states(
        self,
        batch: PackedBatch,
        attention: Literal["sdpa", "flex"] = "sdpa",
        noise_MC: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Latents]:
        """Final hidden states [L, D] of the packed sequence (zero at padding, which the decoder
        never runs), and the latents it was built from (``noise_MC``: the noise of every latent
        token; default a draw from the caller's RNG). The decoder runs the real tokens grouped
        by expert (``train.model.layout``); the result is back in sequence order."""
        _check_batch(batch, self.config)
        device = batch.position_ids_L.device
        layout = ExpertLayout.of(batch)
        order_R = layout.order_R
        read = torch.cat([batch.vit_index_P, batch.vae_index_M, batch.ce_index_C])
        if read.numel() and bool((layout.rows_of(read) < 0).any()):
            raise ValueError(
                "PackedBatch: vit_index_P, vae_index_M or ce_index_C points at padding "
                "(document_ids_L -1), which the decoder does not run; only text may pad"
            )
        seq_mask = AttentionMask.build(
            generalized_causal_mask_mod(
                batch.document_ids_L[order_R], batch.segment_ids_L[order_R],
                batch.noised_L[order_R], position_L=order_R,
            ),
            layout.rows, attention, device,
        )  # fmt: skip

        text_rows_N = layout.rows_of(batch.text_index_N)
        real_N = text_rows_N >= 0  # padding is text in the contract; it gets no row
        text_RD = self.llm.embed_tokens(batch.text_ids_N[real_N])
        x_RD = text_RD.new_zeros(layout.rows, text_RD.shape[-1])
        x_RD = x_RD.index_put((text_rows_N[real_N],), text_RD)

        vit_PD = self.embed_vit(
            batch.vit_patches_PD, batch.vit_position_ids_P, batch.vit_seqlens_V, attention
        )
        x_RD = x_RD.index_put((layout.rows_of(batch.vit_index_P),), vit_PD.to(x_RD.dtype))

        latents = self._latents(batch, noise_MC)
        t_M = latents.t_M[:, None]
        noised_MC = (1 - t_M) * latents.clean_MC + t_M * latents.noise_MC
        latent_MD = self.embed_latents(
            noised_MC, latents.t_I, latents.image_M, batch.latent_position_ids_M
        )
        x_RD = x_RD.index_put((layout.rows_of(batch.vae_index_M),), latent_MD.to(x_RD.dtype))

        routing = ExpertRouting.contiguous(layout.sizes_E)
        hidden_RD = self.llm(x_RD, routing, batch.position_ids_L[order_R], seq_mask)
        return layout.to_sequence(hidden_RD, batch.seq_len), latents

    # --- the embedders of the image token kinds (shared by training and inference) ------------
    def embed_vit(
        self,
        patches_PD: torch.Tensor,
        position_ids_P: torch.Tensor,
        seqlens_V: torch.Tensor,
        attention: Literal["sdpa", "flex"] = "sdpa",
    ) -> torch.Tensor:
        """ViT tokens in LLM space, [P, D]; each of the V images attends only to itself."""
        seqlens_V = seqlens_V.long()
        image_ids_P = torch.repeat_interleave(
            torch.arange(seqlens_V.numel(), device=seqlens_V.device), seqlens_V
        )
        vit_mask = AttentionMask.build(
            same_segment_mask_mod(image_ids_P), image_ids_P.numel(), attention, seqlens_V.device
        )
        features_PD = self.vit(patches_PD, position_ids_P, vit_mask)
        tokens_PD = self.connector(features_PD)
        return tokens_PD + self.vit_pos_embed(position_ids_P).to(tokens_PD.dtype)

    def embed_latents(
        self,
        x_MC: torch.Tensor,
        t_I: torch.Tensor,
        image_M: torch.Tensor,
        position_ids_M: torch.Tensor,
    ) -> torch.Tensor:
        """Latent tokens x_t in LLM space, [M, D]: ``vae2llm(x_t) + time(t) + position``, with
        ``t_I`` per image and ``image_M`` the image of each token."""
        tokens_MD = self.vae2llm(x_MC.to(self.vae2llm.weight.dtype))
        tokens_MD = tokens_MD + self.time_embedder(t_I)[image_M]
        return tokens_MD + self.latent_pos_embed(position_ids_M).to(tokens_MD.dtype)

    def latent_tokens(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Clean latent tokens x0 of ``images`` ([3, H, W] in [-1, 1]), [M, C] float32, images
        in order: the VAE posterior (sampled in train mode, its mean in eval), each 2x2 patch
        flattened in (p, p, c) order, patches row-major."""
        p, z, stride = (
            self.config.latent_patch_size,
            self.config.vae.z_channels,
            self.config.image_stride,
        )
        tokens = []
        for latent, img in zip(self._encode(images), images, strict=True):
            h, w = img.shape[1] // stride, img.shape[2] // stride
            patches = latent[:, : h * p, : w * p].reshape(z, h, p, w, p)
            tokens.append(patches.permute(1, 3, 2, 4, 0).reshape(h * w, p * p * z))
        return torch.cat(tokens)

    def decode_latent_tokens(self, x_MC: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """The inverse of ``latent_tokens`` for one image: [3, H, W] pixels (about [-1, 1])."""
        p, z = self.config.latent_patch_size, self.config.vae.z_channels
        latent = x_MC.reshape(rows, cols, p, p, z).permute(4, 0, 2, 1, 3)
        latent = latent.reshape(1, z, rows * p, cols * p)
        weight = self.vae.decoder.conv_in.weight
        with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):
            return self.vae.decode(latent.to(weight.dtype))[0].float()

    def _latents(self, batch: PackedBatch, noise_MC: torch.Tensor | None = None) -> Latents:
        cfg = self.config
        device = batch.position_ids_L.device
        stride = cfg.image_stride
        grid = [(img.shape[1] // stride, img.shape[2] // stride) for img in batch.vae_images]
        if batch.vae_images:
            clean_MC = self.latent_tokens(batch.vae_images)
        else:
            clean_MC = torch.zeros(0, cfg.latent_dim, device=device)
        if noise_MC is None:
            noise_MC = torch.randn_like(clean_MC)
        elif noise_MC.shape != clean_MC.shape:
            raise ValueError(
                f"noise_MC has shape {tuple(noise_MC.shape)}; the batch's latents are "
                f"{tuple(clean_MC.shape)} (latent tokens x latent channels)"
            )
        else:
            noise_MC = noise_MC.to(clean_MC)
        s = cfg.timestep_shift
        t_I = torch.sigmoid(batch.timestep_logits_I.float())
        t_I = s * t_I / (1 + (s - 1) * t_I)
        counts_I = torch.tensor([h * w for h, w in grid], dtype=torch.long, device=device)
        image_M = torch.repeat_interleave(
            torch.arange(len(grid), device=device), counts_I, output_size=clean_MC.shape[0]
        )
        return Latents(clean_MC, noise_MC, t_I, image_M)

    def _encode(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Scaled VAE latents of the zero-padded image batch, float32, no grad."""
        weight = self.vae.encoder.conv_in.weight
        height = max(img.shape[1] for img in images)
        width = max(img.shape[2] for img in images)
        padded = torch.zeros(
            len(images), 3, height, width, dtype=weight.dtype, device=weight.device
        )
        for i, img in enumerate(images):
            padded[i, :, : img.shape[1], : img.shape[2]] = img
        with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):
            return self.vae.encode(padded, sample=self.training).float()


def _check_batch(batch: PackedBatch, cfg: ModelConfig) -> None:
    """Cheap consistency checks, each naming the PackedBatch field and what was expected."""
    stride = cfg.image_stride
    patch_dim = cfg.vit.patch_size**2 * 3
    problems = []
    if batch.text_ids_N.numel() != batch.text_index_N.numel():
        problems.append("text_ids_N and text_index_N differ in length")
    if batch.ce_index_C.numel() != batch.ce_labels_C.numel():
        problems.append("ce_index_C and ce_labels_C differ in length")
    if batch.vit_patches_PD.shape[-1] != patch_dim:
        problems.append(f"vit_patches_PD width {batch.vit_patches_PD.shape[-1]} != {patch_dim}")
    if int(batch.vit_seqlens_V.sum()) != batch.vit_patches_PD.shape[0]:
        problems.append("vit_seqlens_V does not sum to the number of vit_patches_PD rows")
    if len(batch.vae_images) != batch.timestep_logits_I.numel():
        problems.append("vae_images and timestep_logits_I differ in length")
    tokens = 0
    for i, img in enumerate(batch.vae_images):
        if img.shape[1] % stride or img.shape[2] % stride:
            problems.append(
                f"vae_images[{i}] size {tuple(img.shape[1:])} not a multiple of {stride}"
            )
        tokens += (img.shape[1] // stride) * (img.shape[2] // stride)
    if tokens != batch.vae_index_M.numel() or tokens != batch.latent_position_ids_M.numel():
        problems.append(
            f"vae_images give {tokens} latent tokens but vae_index_M has "
            f"{batch.vae_index_M.numel()} and latent_position_ids_M {batch.latent_position_ids_M.numel()}"
        )
    if problems:
        raise ValueError("PackedBatch inconsistent with the model config: " + "; ".join(problems))
