"""Packing: choosing which dialogues share a sequence, and laying them end to end.

``PackBuffer`` is the overflow buffer: it holds up to ``size`` dialogues; when one more arrives,
it emits a pack made of the *oldest* held dialogue (so none waits forever) plus, repeatedly, the
largest held dialogue that still fits (best fit). Dialogues are never cut; one longer than the
capacity must be rejected before it reaches the buffer.

``pack`` is the pure function from serialized dialogues to a ``PackedBatch`` padded to the
capacity. Padding tokens: document -1 (each attends only to itself), text id ``pad_id``,
position 0, understanding expert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from train.batch import PackedBatch
from train.data.serialize import SerializedDialogue

T = TypeVar("T")


@dataclass
class PackBuffer(Generic[T]):
    capacity: int
    size: int
    tokens: Callable[[T], int]
    items: list[T] = field(default_factory=list)

    def push(self, item: T) -> list[T] | None:
        """Hold ``item``; return a pack (list of items) when the buffer overflows."""
        n = self.tokens(item)
        if n > self.capacity:
            raise ValueError(f"an item of {n} tokens cannot fit a pack of {self.capacity}")
        self.items.append(item)
        return self.take() if len(self.items) > self.size else None

    def drain(self) -> list[list[T]]:
        """Pack everything still held (end of a finite stream)."""
        packs = []
        while self.items:
            packs.append(self.take())
        return packs

    def take(self) -> list[T]:
        """Remove and return one pack: the oldest item, then best fits."""
        chosen = [self.items.pop(0)]
        room = self.capacity - self.tokens(chosen[0])
        while True:
            best, best_n = -1, 0
            for i, item in enumerate(self.items):
                n = self.tokens(item)
                if best_n < n <= room:
                    best, best_n = i, n
            if best < 0:
                return chosen
            chosen.append(self.items.pop(best))
            room -= best_n


def pack(
    dialogues: Sequence[SerializedDialogue], *, capacity: int | None = None, pad_id: int = 0
) -> PackedBatch:
    """Lay ``dialogues`` end to end and pad to ``capacity`` (default: no padding)."""
    real = sum(d.num_tokens for d in dialogues)
    length = real if capacity is None else capacity
    if real > length:
        raise ValueError(f"{real} tokens of dialogue do not fit a pack of {length}")
    pad = length - real
    offsets, segment_offsets = [], []
    offset = segments = 0
    for d in dialogues:
        offsets.append(offset)
        segment_offsets.append(segments)
        offset += d.num_tokens
        segments += int(d.segment_ids_L.max().item()) + 1 if d.segment_ids_L.numel() else 0

    def cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        return torch.cat(parts).to(dtype) if parts else torch.empty(0, dtype=dtype)

    def shifted(name: str, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return cat([getattr(d, name) + o for d, o in zip(dialogues, offsets, strict=True)], dtype)

    def joined(name: str, dtype: torch.dtype) -> torch.Tensor:
        return cat([getattr(d, name) for d in dialogues], dtype)

    pad_index = torch.arange(real, length, dtype=torch.long)
    segment_ids = [
        torch.where(d.segment_ids_L >= 0, d.segment_ids_L + so, d.segment_ids_L)
        for d, so in zip(dialogues, segment_offsets, strict=True)
    ]
    patches = [p for d in dialogues for p in d.vit_patches]
    return PackedBatch(
        position_ids_L=torch.cat([joined("position_ids_L", torch.long), pad_index * 0]),
        expert_ids_L=torch.cat([joined("expert_ids_L", torch.long), pad_index * 0]),
        document_ids_L=torch.cat(
            [
                *(
                    torch.full((d.num_tokens,), i, dtype=torch.int32)
                    for i, d in enumerate(dialogues)
                ),
                torch.full((pad,), -1, dtype=torch.int32),
            ]
        ),
        segment_ids_L=torch.cat([*segment_ids, torch.full((pad,), -1, dtype=torch.int32)]),
        noised_L=torch.cat([joined("noised_L", torch.bool), torch.zeros(pad, dtype=torch.bool)]),
        text_ids_N=torch.cat([joined("text_ids_N", torch.long), torch.full((pad,), pad_id)]),
        text_index_N=torch.cat([shifted("text_index_N"), pad_index]),
        ce_index_C=shifted("ce_index_C"),
        ce_labels_C=joined("ce_labels_C", torch.long),
        vit_patches_PD=(
            torch.cat(patches)
            if patches
            else torch.empty(0, dialogues[0].vit_patch_dim if dialogues else 0)
        ),
        vit_position_ids_P=joined("vit_position_ids_P", torch.long),
        vit_seqlens_V=joined("vit_seqlens_V", torch.int32),
        vit_index_P=shifted("vit_index_P"),
        vae_images=[img for d in dialogues for img in d.vae_images],
        latent_position_ids_M=joined("latent_position_ids_M", torch.long),
        vae_index_M=shifted("vae_index_M"),
        timestep_logits_I=joined("timestep_logits_I", torch.float32),
        sample_lens=[d.num_tokens for d in dialogues],
        tasks=[d.task for d in dialogues],
        sample_ids=[d.sample_id for d in dialogues],
    )
