"""The order the decoder runs one pack in: real tokens only, grouped by expert.

A ``PackedBatch`` lays its tokens out in sequence order with padding at the capacity
(``train/batch.py``). The decoder instead takes the pack's *real* tokens (document >= 0) sorted
by expert with a stable sort: the understanding expert's tokens first, then the generation
expert's, each in sequence order. So

* padding never reaches the decoder: no FLOPs in the layers, and none in the LM head, which
  reads only CE positions;
* each expert works on one contiguous run of rows (``ExpertRouting.contiguous``) instead of
  gathering its tokens from, and scattering them back into, the whole sequence in every
  projection of every layer.

The permutation is computed once per batch and carried to everything that depends on positions:
the embeddings are placed at ``row_L``, the attention mask compares sequence positions through
``order_R`` (``train.mask``), RoPE reads ``position_ids_L[order_R]``, and the final hidden states
go back to sequence order once, for the losses.

Shape suffixes as in ``train/batch.py``; R = decoder rows (the real tokens), E = experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train.batch import PackedBatch
from train.model.llm import NUM_EXPERTS, check_expert_ids


@dataclass(frozen=True)
class ExpertLayout:
    order_R: torch.Tensor
    """int64. Sequence position of each decoder row."""
    row_L: torch.Tensor
    """int64. Decoder row of each sequence position; -1 for padding."""
    sizes_E: tuple[int, ...]
    """Rows of each expert, in expert order (they sum to R)."""

    @classmethod
    def of(cls, batch: PackedBatch) -> ExpertLayout:
        check_expert_ids(batch.expert_ids_L)
        # padding sorts after every expert and is cut off
        key_L = torch.where(batch.document_ids_L >= 0, batch.expert_ids_L, NUM_EXPERTS)
        order_L = torch.argsort(key_L, stable=True)
        sizes_E = tuple(torch.bincount(key_L, minlength=NUM_EXPERTS + 1).tolist()[:NUM_EXPERTS])
        order_R = order_L[: sum(sizes_E)]
        row_L = torch.full_like(order_L, -1)
        row_L[order_R] = torch.arange(order_R.numel(), device=order_R.device)
        return cls(order_R, row_L, sizes_E)

    @property
    def rows(self) -> int:
        return int(self.order_R.numel())

    def rows_of(self, index_T: torch.Tensor) -> torch.Tensor:
        """Decoder rows of the real sequence positions ``index_T``."""
        return self.row_L[index_T]

    def to_sequence(self, x_RD: torch.Tensor, seq_len: int) -> torch.Tensor:
        """[L, D] in sequence order; padding rows are zero (never computed)."""
        return x_RD.new_zeros(seq_len, x_RD.shape[-1]).index_copy(0, self.order_R, x_RD)
