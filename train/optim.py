"""Optimizer, learning-rate schedule and optional weight EMA (paper section 4.1).

AdamW over every parameter that requires a gradient, a linear warmup to a constant rate, and an
EMA that is off by default (the paper trains without it and ships the online weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from train.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen (check optim.freeze)")
    # foreach is the fast path that works with FSDP2's DTensor parameters on CPU and CUDA.
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        foreach=True,
    )


def warmup_constant(warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` updates: ``(step + 1) / warmup``, then 1."""

    def factor(step: int) -> float:
        if warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / warmup_steps)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    # The first update already uses a non-zero rate (1/warmup of the peak), as torchtitan does.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(cfg.warmup_steps))


def canonical_name(name: str) -> str:
    """A parameter's name in the unwrapped model."""
    return name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")


class EMA:
    """Exponential moving average of the trainable weights, kept in fp32 in the params' layout.

    With FSDP2 the shadow copies are DTensors sharded like the parameters, so the EMA costs one
    extra copy of the local shard and no communication.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone().float() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        current = [params[n].detach().float() for n in self.names]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keyed by the plain model's parameter names (wrappers such as activation
        checkpointing stripped), so a checkpoint's EMA loads into an unwrapped model."""
        return {canonical_name(n): t for n, t in zip(self.names, self.shadow, strict=True)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = {canonical_name(n) for n in self.names} - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")
        with torch.no_grad():
            for name, shadow in zip(self.names, self.shadow, strict=True):
                shadow.copy_(state[canonical_name(name)])


def trainable_summary(named: Iterable[tuple[str, nn.Parameter]]) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = frozen = 0
    for _, p in named:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen
