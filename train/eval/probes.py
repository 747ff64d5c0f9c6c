"""Teacher-forced probes of the final answer: documents, packs, and what one forward yields.

A *document* is one dialogue under one history variant. It is laid out by the training path
(``plan_dialogue``, ``materialize``, ``pack``) with one change to the plan: the final answer's
noised image block is repeated once per noise level, copy after copy. A noised block is visible
only to itself and does not advance the RoPE id (``train.mask``, ``train.data.serialize``), so
copy ``k`` reads exactly the history and itself, as a layout holding one copy at level ``k``
would, and the history is run once for all levels. The model scores it with its own per-token
losses (``ChatUMM.token_losses``); the probe only chooses what to read:

- CE: the CE targets in the final answer (its intent tokens, its text, its end of turn). A
  target read from a noised copy (an answer that ends right after its image decides to stop
  from it) counts once, averaged over the levels.
- MSE: the latent tokens of copy ``k``, at noise level ``t_k`` set through its timestep logit,
  against noise from a generator seeded by (seed, sample id, k): every variant of a dialogue
  sees the same noise. Other latents get zero noise: clean images (t = 0) ignore it, and the
  history's noised images are seen by nothing scored.
- intent decisions: at every assistant segment boundary the three next-token candidates
  ``<|im_start|>`` (talk), ``<|vision_start|>`` (draw) and ``<|endoftext|>`` (stop). At a turn's
  start (*modality*) the decision is right when the right one of talk/draw scores higher; after
  a segment (*end*) when the right one of the three scores highest.

The variants of a dialogue always share a forward: the model encodes a forward's images as one
zero-padded VAE batch, so sharing it keeps the final image's clean latents identical across
variants. Packs are planned over the whole evaluation set in order, the same on every rank, so
a result does not depend on the number of ranks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from train.batch import PackedBatch
from train.data.pack import pack
from train.data.serialize import Block, DialoguePlan, SerializedDialogue, materialize
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms
from train.eval.dataset import Dialogue
from train.eval.variants import VARIANTS, Variant
from train.model.model import TokenLosses

DecisionKind = str  # "modality" (at a turn's start) or "end" (after a segment)


def with_levels(plan: DialoguePlan, levels: int) -> tuple[DialoguePlan, tuple[Block, ...]]:
    """``plan`` with the final answer's noised image block repeated ``levels`` times in a row
    (the blocks after it move along); returns the plan and the copies."""
    blocks = list(plan.blocks)
    last = blocks[-1].turn
    i = next(j for j, b in enumerate(blocks) if b.kind == "vae_noised" and b.turn == last)
    size = blocks[i].stop - blocks[i].start
    copies = [replace(blocks[i], start=blocks[i].start + k * size, stop=blocks[i].stop + k * size)
              for k in range(levels)]  # fmt: skip
    shift = (levels - 1) * size
    after = [replace(b, start=b.start + shift, stop=b.stop + shift) for b in blocks[i + 1 :]]
    expanded = DialoguePlan(plan.sample, (*blocks[:i], *copies, *after), plan.num_tokens + shift)
    return expanded, tuple(copies)


@dataclass(frozen=True)
class Doc:
    dialogue: int
    """Index into the evaluation set."""
    variant: Variant
    tokens: int
    """Tokens with the noised copies."""


@dataclass(frozen=True)
class Row:
    """One CE row kept for a document."""

    final: bool
    """Its target is in the final answer."""
    decision: DecisionKind | None
    label: int
    weight: float
    """1, or 1/levels for a target read from a noised copy."""


@dataclass(frozen=True)
class DocResult:
    dialogue: int
    variant: Variant
    tokens: int
    ce_sum: float
    """Weighted CE over the final answer's targets."""
    ce_weight: float
    mse: tuple[float, ...]
    """Mean MSE of the final image's latent tokens, per noise level."""
    decisions: tuple[tuple[DecisionKind, bool, bool, float], ...]
    """(kind, in the final answer, right, weight) for every intent decision of the dialogue."""


@dataclass(frozen=True)
class _Placed:
    doc: Doc
    rows: tuple[Row, ...]
    occurrences: tuple[int, ...]
    """Each copy's image occurrence in the batch (index into ``timestep_logits_I``)."""
    latents: tuple[tuple[int, int], ...]
    """[start, stop) of each copy's latent tokens in the batch."""
    ce_offset: int


def latent_spans(blocks: Sequence[Block]) -> dict[int, tuple[int, tuple[int, int]]]:
    """Block index -> (image occurrence, [start, stop) of its latent tokens) for each VAE block
    of a dialogue, in the order ``materialize`` lays the images out."""
    spans: dict[int, tuple[int, tuple[int, int]]] = {}
    latent = 0
    for i, b in enumerate(blocks):
        if b.kind in ("vae_noised", "vae_clean"):
            n = b.grid[0] * b.grid[1]
            spans[i] = (len(spans), (latent, latent + n))
            latent += n
    return spans


def layout_latents(blocks: Sequence[Block]) -> tuple[int, tuple[int, int]]:
    """(image occurrence, latent span) of the final answer's (first) noised image."""
    last = blocks[-1].turn
    spans = latent_spans(blocks)
    i = next(j for j, b in enumerate(blocks) if b.kind == "vae_noised" and b.turn == last)
    return spans[i]


def plan_packs(dialogues: Sequence[Dialogue], levels: int, capacity: int) -> list[list[Doc]]:
    """Documents in packs, in evaluation-set order: a dialogue's variants always share a pack,
    which holds at most ``capacity`` tokens unless one dialogue's variants alone exceed it."""
    packs: list[list[Doc]] = []
    current: list[Doc] = []
    used = 0
    for i, dialogue in enumerate(dialogues):
        docs = []
        for v in VARIANTS:
            if v in dialogue.plans:
                plan = dialogue.plans[v]
                copies = with_levels(plan, levels)[1]
                docs.append(Doc(i, v, plan.num_tokens + (levels - 1) * _size(copies[0])))
        need = sum(d.tokens for d in docs)
        if current and used + need > capacity:
            packs.append(current)
            current, used = [], 0
        current += docs
        used += need
    if current:
        packs.append(current)
    return packs


def _size(block: Block) -> int:
    return block.stop - block.start


def timestep_logit(t: float, shift: float) -> float:
    """The logit that the model turns into noise level ``t``: it applies ``sigmoid`` then the
    shift ``s * u / (1 + (s - 1) * u)``; this inverts both."""
    u = t / (shift - (shift - 1) * t)
    return math.log(u) - math.log1p(-u)


def _seed(*keys: object) -> int:
    text = "\0".join(map(str, keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


class Prober:
    """Builds the batch of a pack of documents and reads each document's results back."""

    def __init__(
        self,
        dialogues: Sequence[Dialogue],
        tokenizer: ChatTokenizer,
        transforms: Transforms,
        *,
        timesteps: Sequence[float],
        timestep_shift: float,
        latent_dim: int,
        seed: int,
        pad_multiple: int | None = None,
    ):
        self.dialogues, self.tokenizer, self.transforms = dialogues, tokenizer, transforms
        self.logits = [timestep_logit(t, timestep_shift) for t in timesteps]
        self.latent_dim, self.seed, self.pad_multiple = latent_dim, seed, pad_multiple
        sp = tokenizer.special
        self.choices = (sp.im_start, sp.vision_start, sp.end_of_turn)

    def _serialized(
        self, doc: Doc
    ) -> tuple[SerializedDialogue, tuple[Row, ...], list[tuple[int, tuple[int, int]]]]:
        """The document's tensors with its CE rows chosen, its rows, and each noised copy's
        image occurrence and latent span."""
        levels = len(self.logits)
        plan, copies = with_levels(self.dialogues[doc.dialogue].plans[doc.variant], levels)
        # The history's own noised images draw their (unread) timesteps from this generator.
        rng = np.random.default_rng(_seed(self.seed, "serialize", plan.sample.sample_id))
        d = materialize(plan, self.tokenizer, self.transforms, rng)
        spans = latent_spans(plan.blocks)
        first = plan.blocks.index(copies[0])
        copy_spans = [spans[first + k] for k in range(levels)]
        answer_start = copies[0].start
        decisions = _decisions(plan.blocks)
        ce = dict(zip(d.ce_index_C.tolist(), d.ce_labels_C.tolist(), strict=True))
        # After the image: the stop decision, read from each copy, if the answer ends there
        # (materialize labels the copy boundaries as a new image; the last copy's is right).
        after_image = ce.get(copies[-1].stop - 1)
        from_copy = {c.stop - 1 for c in copies}
        index, labels, rows = [], [], []
        for p, label in ce.items():
            if p in from_copy:
                if after_image is None:
                    continue
                label = after_image
            final = p + 1 >= answer_start
            if not final and p not in decisions:
                continue
            index.append(p)
            labels.append(label)
            weight = 1 / levels if p in from_copy else 1.0
            rows.append(Row(final, decisions.get(p), label, weight))
        d = replace(
            d,
            ce_index_C=torch.tensor(index, dtype=torch.long),
            ce_labels_C=torch.tensor(labels, dtype=torch.long),
        )
        return d, tuple(rows), copy_spans

    def build(self, docs: Sequence[Doc]) -> tuple[PackedBatch, torch.Tensor, list[_Placed]]:
        """The packed batch, its noise [M, C] and where each document sits in it."""
        serialized: list[SerializedDialogue] = []
        placed: list[_Placed] = []
        noise: list[torch.Tensor] = []
        ce_offset = latent_offset = image_offset = 0
        for doc in docs:
            d, rows, copies = self._serialized(doc)
            logits_I = d.timestep_logits_I.clone()
            noise_MC = torch.zeros(int(d.vae_index_M.numel()), self.latent_dim)
            for k, (occurrence, (a, b)) in enumerate(copies):
                logits_I[occurrence] = self.logits[k]
                gen = torch.Generator().manual_seed(_seed(self.seed, "noise", d.sample_id, k))
                noise_MC[a:b] = torch.randn(b - a, self.latent_dim, generator=gen)
            placed.append(
                _Placed(
                    doc,
                    rows,
                    tuple(image_offset + occurrence for occurrence, _ in copies),
                    tuple((latent_offset + a, latent_offset + b) for _, (a, b) in copies),
                    ce_offset,
                )
            )
            serialized.append(replace(d, timestep_logits_I=logits_I))
            noise.append(noise_MC)
            ce_offset += len(rows)
            latent_offset += noise_MC.shape[0]
            image_offset += len(logits_I)
        real = sum(d.num_tokens for d in serialized)
        m = self.pad_multiple
        batch = pack(
            serialized,
            capacity=None if m is None else -(-real // m) * m,
            pad_id=self.tokenizer.special.pad,
        )
        return batch, torch.cat(noise), placed

    def results(self, terms: TokenLosses, placed: Sequence[_Placed]) -> list[DocResult]:
        ce_C = terms.ce_C.detach().double().cpu()
        choices_C3 = terms.logits_CV.detach()[:, list(self.choices)].float().cpu()
        has_mse_M = terms.has_mse_M.cpu()
        mse_M = torch.zeros(has_mse_M.numel(), dtype=torch.float64)
        mse_M[has_mse_M] = terms.mse_K.detach().double().cpu()
        out = []
        for p in placed:
            ce_sum = ce_weight = 0.0
            decisions = []
            for j, row in enumerate(p.rows):
                c = p.ce_offset + j
                if row.final:
                    ce_sum += row.weight * float(ce_C[c])
                    ce_weight += row.weight
                if row.decision is not None:
                    right = self._right(choices_C3[c], row.decision, row.label)
                    decisions.append((row.decision, row.final, right, row.weight))
            mse = []
            for a, b in p.latents:
                assert bool(has_mse_M[a:b].all()), "every noised copy has t > 0"
                mse.append(float(mse_M[a:b].mean()))
            out.append(
                DocResult(
                    dialogue=p.doc.dialogue,
                    variant=p.doc.variant,
                    tokens=p.doc.tokens,
                    ce_sum=ce_sum,
                    ce_weight=ce_weight,
                    mse=tuple(mse),
                    decisions=tuple(decisions),
                )
            )
        return out

    def _right(self, scores_3: torch.Tensor, kind: DecisionKind, label: int) -> bool:
        talk, draw, _ = self.choices
        if kind == "modality":  # talk or draw: which of the two scores higher
            want, other = (talk, draw) if label == talk else (draw, talk)
            return bool(scores_3[self.choices.index(want)] > scores_3[self.choices.index(other)])
        return self.choices[int(scores_3.argmax())] == label


def _decisions(blocks: Sequence[Block]) -> dict[int, DecisionKind]:
    """Position whose next token is an intent decision -> its kind, over every assistant turn
    (the boundaries between noised copies count as the stop decision after the image)."""
    out: dict[int, DecisionKind] = {}
    started: set[int] = set()
    for b in blocks:
        if b.role == "assistant" and b.kind in ("text", "eot", "vae_noised"):
            out[b.start - 1] = "end" if b.turn in started else "modality"
            started.add(b.turn)
    return out
