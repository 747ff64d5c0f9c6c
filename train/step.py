"""One optimizer step over a global batch of packs, and what it measures.

The global batch of a step is ``dp_world x grad_accum`` packs. Each rank's loss is normalised by
the *global* count of CE tokens and of MSE tokens (one small all-reduce before the forward
passes), so the step is the same however the packs are split over ranks and micro-batches:
two ranks with one pack each take the same step as one rank accumulating both packs. FSDP
averages gradients over the ``dp_world`` ranks; the loss is scaled by ``dp_world`` to undo it.

The flow-matching noise of pack ``j`` (in global order) of step ``s`` is drawn after seeding
with ``(seed, s, j)``: same data, same noise, whatever the split, and a resumed run draws what
the uninterrupted one drew.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from train.batch import PackedBatch


@dataclass(frozen=True)
class StepResult:
    ce: float
    """Global mean CE per supervised token (nan when the step had none)."""
    mse: float
    """Global mean flow-matching MSE per noised latent token (nan when none)."""
    grad_norm: float
    real_tokens: int
    """Dialogue tokens in the global batch (padding excluded)."""
    pack_tokens: int
    """Pack capacity x packs in the global batch."""
    stop_requested: bool
    """Some rank asked to stop (SIGTERM); every rank sees the same value."""
    finite: bool
    """Loss sums and gradient norm are finite; False means the update was skipped."""


def loss_token_counts(batch: PackedBatch) -> tuple[int, int]:
    """(CE tokens, MSE tokens) of a pack, read from the contract: CE positions, and latent
    tokens of noised images (``noised_L`` at the latent positions)."""
    n_ce = int(batch.ce_index_C.numel())
    n_mse = int(batch.noised_L[batch.vae_index_M].sum()) if batch.vae_index_M.numel() else 0
    return n_ce, n_mse


def micro_seed(seed: int, step: int, global_index: int) -> int:
    return (seed * 1_000_003 + step * 65_537 + global_index) % (2**63)


def _all_reduce(
    values: list[float], device: torch.device, group: dist.ProcessGroup | None
) -> list[float]:
    """Sums over the group; the tensor lives on ``device`` because NCCL reduces GPU tensors only."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, group=group)
    return t.tolist()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[PackedBatch],
    *,
    step: int,
    seed: int,
    dp_rank: int,
    dp_world: int,
    ce_weight: float,
    mse_weight: float,
    grad_clip: float,
    attention: str,
    device: torch.device,
    stop_requested: bool = False,
    group: dist.ProcessGroup | None = None,
) -> StepResult:
    """Forward/backward every pack, clip, and step the optimizer unless the step is non-finite
    (then the gradients are dropped and ``StepResult.finite`` is False)."""
    counts = [loss_token_counts(b) for b in micro_batches]
    n_ce, n_mse = _all_reduce([sum(c for c, _ in counts), sum(m for _, m in counts)], device, group)
    accum = len(micro_batches)
    ce_sum = mse_sum = 0.0
    for j, batch in enumerate(micro_batches):
        torch.manual_seed(micro_seed(seed, step, dp_rank * accum + j))
        terms = model(batch.to(device), attention=attention)
        ce_s, ce_n, mse_s, mse_n = (
            terms.ce_sum,
            terms.ce_tokens,
            terms.mse_sum,
            terms.mse_tokens,
        )
        assert (int(ce_n), int(mse_n)) == counts[j], (
            f"model counted {(int(ce_n), int(mse_n))} loss tokens, the batch holds {counts[j]}"
        )
        loss = ce_weight * ce_s / max(n_ce, 1) + mse_weight * mse_s / max(n_mse, 1)
        (loss * dp_world).backward()
        ce_sum += float(ce_s.detach())
        mse_sum += float(mse_s.detach())

    real = sum(b.real_tokens for b in micro_batches)
    cap = sum(b.seq_len for b in micro_batches)
    ce_g, mse_g, real_g, cap_g, stop_g = _all_reduce(
        [ce_sum, mse_sum, real, cap, float(stop_requested)], device, group
    )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP2: the norm is already global
        norm = norm.full_tensor()
    result = StepResult(
        ce=ce_g / n_ce if n_ce else math.nan,
        mse=mse_g / n_mse if n_mse else math.nan,
        grad_norm=float(norm),
        real_tokens=int(real_g),
        pack_tokens=int(cap_g),
        stop_requested=stop_g > 0,
        finite=all(math.isfinite(v) for v in (ce_g, mse_g, float(norm))),
    )
    if result.finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return result
