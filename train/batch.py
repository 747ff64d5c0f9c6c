"""The packed-batch contract between the data pipeline (``train/data``) and the model.

One ``PackedBatch`` is one packed sequence of ``L`` tokens on one rank: several dialogues laid
end to end (BAGEL's layout, batch size 1), padded to the pack capacity.

Shape suffixes (used across ``train/``):
    L  tokens in the packed sequence (capacity, padding included)
    N  text tokens (special markers included)       C  tokens with a cross-entropy target
    P  ViT patches of all ViT images                 V  ViT images
    M  VAE latent tokens (2x2-patchified latents)    I  VAE image occurrences
    D  feature width                                 H/W  pixel height/width

Token kinds in the sequence and who reads what (paper Figure 2):
    text     understanding expert; embedded from ``text_ids_N``
    ViT      understanding expert; from ``vit_patches_PD`` through the ViT and connector
    latent   generation expert; from ``vae_images`` through the frozen VAE, 2x2 patchify, vae2llm
             (+ timestep embedding and latent position embedding)

Filled by ``train.data`` (the packer); consumed by ``train.model``. The generalized causal mask
is derived from ``document_ids_L``, ``segment_ids_L`` and ``noised_L`` by ``train.mask``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class PackedBatch:
    # --- the sequence --------------------------------------------------------------------------
    position_ids_L: torch.Tensor
    """int64. 1-D RoPE ids: consecutive over text; one id shared by all tokens of an image
    (its markers included); a noised image does not advance the id and its clean copy reuses
    it; each dialogue restarts at 0. Padding: 0."""
    expert_ids_L: torch.Tensor
    """int64. 0 = understanding (text, markers, ViT, padding), 1 = generation (VAE latents)."""
    document_ids_L: torch.Tensor
    """int32. Index of the dialogue each token belongs to inside this pack; -1 for padding."""
    segment_ids_L: torch.Tensor
    """int32. Id (unique within the pack) of the image block a token belongs to: the block is
    ``<|vision_start|>`` + the image's ViT or latent tokens + ``<|vision_end|>`` and attends
    bidirectionally inside itself; -1 for tokens that attend causally (text, padding)."""
    noised_L: torch.Tensor
    """bool. True for the tokens of a noised-latent block (markers included): visible only to
    tokens of the same block."""

    # --- text ----------------------------------------------------------------------------------
    text_ids_N: torch.Tensor
    """int64. Token ids of the text positions (special tokens and padding included)."""
    text_index_N: torch.Tensor
    """int64. Position in the sequence of each text token."""

    # --- cross-entropy -------------------------------------------------------------------------
    ce_index_C: torch.Tensor
    """int64. Positions whose hidden state predicts the next token: assistant text (from its
    ``<|im_start|>`` through the last text token, predicting the text and ``<|im_end|>``), and
    the intent: the first token of each assistant segment (``<|im_start|>``/``<|vision_start|>``)
    and the end-of-turn token, each predicted from the token just before it (for an answer's
    first segment, the user's last token)."""
    ce_labels_C: torch.Tensor
    """int64. The token each of those positions must predict."""

    # --- ViT -----------------------------------------------------------------------------------
    vit_patches_PD: torch.Tensor
    """float32 in [-1, 1]. Patch pixels flattened in (p, p, c) order, all ViT images packed."""
    vit_position_ids_P: torch.Tensor
    """int64. row * max_patches_per_side + col of each patch in its image."""
    vit_seqlens_V: torch.Tensor
    """int32. Patches per ViT image (each image attends only to itself in the ViT)."""
    vit_index_P: torch.Tensor
    """int64. Position in the sequence of each ViT token."""

    # --- VAE -----------------------------------------------------------------------------------
    vae_images: list[torch.Tensor]
    """I tensors [3, H, W], float32 in [-1, 1], H and W multiples of the VAE stride x 2. One per
    occurrence in the sequence (a generated image with a later turn occurs twice: noised, clean)."""
    latent_position_ids_M: torch.Tensor
    """int64. row * max_latent_size + col of each latent token in its (patchified) image."""
    vae_index_M: torch.Tensor
    """int64. Position in the sequence of each latent token, images in ``vae_images`` order."""
    timestep_logits_I: torch.Tensor
    """float32. Per image occurrence: a N(0, 1) draw for a noised image (the model applies
    sigmoid and the shift to get t), -inf for a clean one (t = 0)."""

    # --- bookkeeping ---------------------------------------------------------------------------
    sample_lens: list[int]
    """Tokens of each dialogue in the pack, in order (sum = real tokens)."""
    tasks: list[str]
    """Task name of each dialogue in the pack."""
    sample_ids: list[str] = field(default_factory=list)
    """``DialogueSample.sample_id`` of each dialogue in the pack (tracing a batch to its rows)."""

    @property
    def seq_len(self) -> int:
        return int(self.position_ids_L.numel())

    @property
    def real_tokens(self) -> int:
        return sum(self.sample_lens)

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            elif f.name == "vae_images":
                value = [img.to(device, non_blocking=True) for img in value]
            moved[f.name] = value
        return PackedBatch(**moved)
