"""A minimal hand-written PackedBatch builder for the model tests (train/data is the real packer).

It follows ``train/batch.py`` field by field: text positions advance by one; an image block
(``<|vision_start|>`` + tokens + ``<|vision_end|>``) shares one position id; a noised image does
not advance it and its clean copy reuses it; each dialogue restarts at 0; padding is document -1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

from train.batch import PackedBatch
from train.model import ModelConfig

PAD, IM_START, IM_END, VISION_START, VISION_END = 0, 1, 2, 3, 4
FIRST_WORD = 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny ops run ~50x slower with two intra-op threads on a busy 2-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass
class PackBuilder:
    cfg: ModelConfig
    gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    tokens: list[dict] = field(default_factory=list)  # one dict per sequence position
    ce: list[tuple[int, int]] = field(default_factory=list)
    vit: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    vae: list[tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=list)
    doc: int = -1
    pos: int = 0
    segments: int = 0
    pending_label_at: int | None = None

    def dialogue(self) -> PackBuilder:
        self.doc, self.pos = self.doc + 1, 0
        return self

    def _put(self, kind: str, expert: int = 0, seg: int = -1, noised: bool = False, **kw) -> int:
        self.tokens.append(
            dict(kind=kind, expert=expert, seg=seg, noised=noised, doc=self.doc, pos=self.pos, **kw)
        )
        return len(self.tokens) - 1

    def _label_pending(self, label: int) -> None:
        if self.pending_label_at is not None:
            self.ce.append((self.pending_label_at, label))
            self.pending_label_at = None

    def text(self, n_words: int, supervised: bool = False) -> PackBuilder:
        """``<|im_start|> words <|im_end|>``; supervised: each token predicts the next, and the
        closing ``<|im_end|>`` predicts whatever comes next (the intent token)."""
        words = torch.randint(FIRST_WORD, self.cfg.llm.vocab_size, (n_words,), generator=self.gen)
        ids = [IM_START, *words.tolist(), IM_END]
        self._label_pending(IM_START)
        for j, tok in enumerate(ids):
            at = self._put("text", id=tok)
            self.pos += 1
            if supervised and j + 1 < len(ids):
                self.ce.append((at, ids[j + 1]))
        if supervised:
            self.pending_label_at = len(self.tokens) - 1
        return self

    def vit_image(self, rows: int, cols: int) -> PackBuilder:
        p, side = self.cfg.vit.patch_size, self.cfg.vit.max_patches_per_side
        image = torch.rand(3, rows * p, cols * p, generator=self.gen) * 2 - 1
        patches = image.reshape(3, rows, p, cols, p).permute(1, 3, 2, 4, 0).reshape(rows * cols, -1)
        ids = torch.arange(rows)[:, None] * side + torch.arange(cols)[None, :]
        self.vit.append((patches, ids.flatten()))
        self._block("vit", rows * cols, expert=0, noised=False)
        self.pos += 1
        return self

    def vae_image(self, rows: int, cols: int, noised: bool, image: torch.Tensor | None = None):
        stride, side = self.cfg.image_stride, self.cfg.max_latent_size
        if image is None:
            image = torch.rand(3, rows * stride, cols * stride, generator=self.gen) * 2 - 1
        ids = torch.arange(rows)[:, None] * side + torch.arange(cols)[None, :]
        logit = float(torch.randn((), generator=self.gen)) if noised else float("-inf")
        self.vae.append((image, ids.flatten(), logit))
        self._block("vae", rows * cols, expert=1, noised=noised)
        if not noised:
            self.pos += 1
        return self

    def _block(self, kind: str, n: int, expert: int, noised: bool) -> None:
        self._label_pending(VISION_START)
        seg, self.segments = self.segments, self.segments + 1
        self._put("text", id=VISION_START, seg=seg, noised=noised)
        for _ in range(n):
            self._put(kind, expert=expert, seg=seg, noised=noised)
        self._put("text", id=VISION_END, seg=seg, noised=noised)

    def build(self, capacity: int) -> PackedBatch:
        assert capacity >= len(self.tokens)
        real = len(self.tokens)
        doc_lens = [sum(t["doc"] == d for t in self.tokens) for d in range(self.doc + 1)]
        toks = self.tokens + [
            dict(kind="text", id=PAD, expert=0, seg=-1, noised=False, doc=-1, pos=0)
            for _ in range(capacity - real)
        ]
        where = {
            k: torch.tensor([i for i, t in enumerate(toks) if t["kind"] == k])
            for k in ("text", "vit", "vae")
        }
        vit_patches = [p for p, _ in self.vit]
        patch_dim = self.cfg.vit.patch_size**2 * 3
        return PackedBatch(
            position_ids_L=torch.tensor([t["pos"] for t in toks]),
            expert_ids_L=torch.tensor([t["expert"] for t in toks]),
            document_ids_L=torch.tensor([t["doc"] for t in toks], dtype=torch.int32),
            segment_ids_L=torch.tensor([t["seg"] for t in toks], dtype=torch.int32),
            noised_L=torch.tensor([t["noised"] for t in toks]),
            text_ids_N=torch.tensor([toks[i]["id"] for i in where["text"].tolist()]),
            text_index_N=where["text"].long(),
            ce_index_C=torch.tensor([i for i, _ in self.ce], dtype=torch.long),
            ce_labels_C=torch.tensor([label for _, label in self.ce], dtype=torch.long),
            vit_patches_PD=torch.cat(vit_patches) if vit_patches else torch.zeros(0, patch_dim),
            vit_position_ids_P=torch.cat([i for _, i in self.vit]) if self.vit else torch.zeros(0, dtype=torch.long),
            vit_seqlens_V=torch.tensor([p.shape[0] for p in vit_patches], dtype=torch.int32),
            vit_index_P=where["vit"].long(),
            vae_images=[img for img, _, _ in self.vae],
            latent_position_ids_M=torch.cat([i for _, i, _ in self.vae]) if self.vae else torch.zeros(0, dtype=torch.long),
            vae_index_M=where["vae"].long(),
            timestep_logits_I=torch.tensor([t for _, _, t in self.vae], dtype=torch.float32),
            sample_lens=doc_lens,
            tasks=["test"] * len(doc_lens),
        )  # fmt: skip


def dialogue_batch(cfg: ModelConfig, seed: int = 0, capacity: int = 96) -> PackedBatch:
    """Two dialogues: an edit-like turn (ViT upload, noised output, clean copy, more text) and a
    text-only chat, then padding."""
    b = PackBuilder(cfg, torch.Generator().manual_seed(seed))
    b.dialogue().text(4).vit_image(2, 3).text(3, supervised=True)
    b.vae_image(2, 2, noised=True)
    image = b.vae[-1][0]
    b.vae_image(2, 2, noised=False, image=image).text(5).text(4, supervised=True)
    b.dialogue().text(5).text(6, supervised=True)
    return b.build(capacity)
