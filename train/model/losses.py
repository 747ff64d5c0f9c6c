"""Loss terms of one packed batch and their reduction over the data-parallel group.

``ChatUMM.forward`` returns *sums* and *token counts* so that the losses can be token means over
the whole data-parallel group (BAGEL's reduction), whatever the number of supervised tokens on
each rank:

    ce  = sum over CE tokens of the token's cross-entropy            / CE tokens in the group
    mse = sum over noised latent tokens of mean_c (pred_c - v_c)^2    / MSE tokens in the group

where v = noise - x0 is the rectified-flow velocity and c runs over the 2x2xz channels of a
latent token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class LossTerms:
    ce_sum: torch.Tensor
    """Cross-entropy summed over the CE tokens of this batch (differentiable, float32)."""
    ce_tokens: torch.Tensor
    """Number of CE tokens (float32 scalar, no grad)."""
    mse_sum: torch.Tensor
    """Per-token MSE (mean over the latent channels) summed over noised latent tokens."""
    mse_tokens: torch.Tensor
    """Number of noised latent tokens (float32 scalar, no grad)."""


def reduce_losses(
    terms: LossTerms, group: dist.ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ce, mse) as token means over the data-parallel ``group`` (or this process alone).

    The returned tensors' *values* are the group-wide token means (the same on every rank, ready
    to log). Their *gradients* are those of ``local_sum * world / group_tokens``: FSDP averages
    gradients over the group, so the averaged gradient is exactly that of the group-wide mean
    (BAGEL's ``ce.sum() * world_size / total_ce_tokens``). A loss with no tokens anywhere is 0.
    """
    local = torch.stack([terms.ce_sum, terms.ce_tokens, terms.mse_sum, terms.mse_tokens]).detach()
    world = 1
    if group is not None:
        local = local.clone()
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=group)
        world = dist.get_world_size(group)
    ce_sum, ce_tokens, mse_sum, mse_tokens = local.unbind()
    ce = _group_mean(terms.ce_sum, ce_sum, ce_tokens, world)
    mse = _group_mean(terms.mse_sum, mse_sum, mse_tokens, world)
    return ce, mse


def _group_mean(
    local_sum: torch.Tensor, group_sum: torch.Tensor, group_tokens: torch.Tensor, world: int
) -> torch.Tensor:
    tokens = group_tokens.clamp(min=1.0)
    scaled = local_sum * world / tokens
    # value: the group mean; gradient: the local share of it
    return scaled + (group_sum / tokens - scaled).detach()
