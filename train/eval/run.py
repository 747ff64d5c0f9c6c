"""Running the probes: on one process or sharded over ranks, reduced on rank 0.

``Evaluator`` is built once per run (the evaluation set, its packs and the prober) and called
with a model as often as wanted: by ``python -m train eval`` on a checkpoint, and every
``eval.every`` steps by the training loop on the model it trains (FSDP-sharded or not).

Sharding: the packs are planned over the whole evaluation set, the same on every rank; rank
``r`` of ``R`` runs ``packs[r::R]``. With FSDP every rank must run as many forwards as the
others, so a rank with one pack fewer runs the first pack once more and discards it. The
per-document results are gathered on rank 0, which builds the report. Throughput is the real
(unpadded) tokens of all ranks over the slowest rank's wall time.

The probes draw nothing from the global RNGs (the noise comes from seeded generators, the VAE
gives its posterior mean in eval mode), so running them in the middle of training leaves the
training run's random stream untouched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from train.data.config import DataConfig
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms
from train.eval.config import EvalConfig
from train.eval.dataset import load_eval_set
from train.eval.probes import DocResult, Prober, plan_packs
from train.eval.report import build_report, dialogue_records
from train.model.config import ModelConfig


class Evaluator:
    def __init__(
        self,
        cfg: EvalConfig,
        data: Sequence[str | Path],
        *,
        holdout: float | None,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        tokenizer: ChatTokenizer,
        attention: str,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ):
        self.cfg, self.attention, self.device = cfg, attention, device
        self.rank, self.world = rank, world
        self.data, self.holdout = [str(d) for d in data], holdout
        transforms = Transforms.from_config(data_cfg)
        self.eval_set = load_eval_set(
            data,
            tokenizer,
            transforms,
            holdout=holdout,
            max_per_task=cfg.max_per_task,
            seed=cfg.seed,
            tasks=cfg.tasks,
        )
        self.capacity = cfg.pack_tokens or data_cfg.pack_tokens
        self.packs = plan_packs(self.eval_set.dialogues, len(cfg.timesteps), self.capacity)
        self.prober = Prober(
            self.eval_set.dialogues,
            tokenizer,
            transforms,
            timesteps=cfg.timesteps,
            timestep_shift=model_cfg.timestep_shift,
            latent_dim=model_cfg.latent_dim,
            seed=cfg.seed,
            # compiled FlexAttention sees few shapes; the dense CPU path needs no padding
            pad_multiple=self.capacity if attention == "flex" else None,
        )

    @property
    def num_dialogues(self) -> int:
        return len(self.eval_set.dialogues)

    def _forward(self, model: nn.Module) -> tuple[list[DocResult], int, float]:
        mine = self.packs[self.rank :: self.world]
        rounds = -(-len(self.packs) // self.world)
        results: list[DocResult] = []
        tokens = 0
        started = time.perf_counter()
        for i in range(rounds):
            real = i < len(mine)
            batch, noise_MC, placed = self.prober.build(mine[i] if real else self.packs[0])
            terms = model.token_losses(  # type: ignore[operator]
                batch.to(self.device), self.attention, noise_MC.to(self.device)
            )
            if real:
                results += self.prober.results(terms, placed)
                tokens += batch.real_tokens
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return results, tokens, time.perf_counter() - started

    def run(
        self, model: nn.Module, checkpoint: str, step: int | None = None
    ) -> dict[str, Any] | None:
        """Probe ``model``; the report on rank 0, None elsewhere. Every rank must call it."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                mine = self._forward(model)
        finally:
            model.train(was_training)
        parts: list[Any] = [mine]
        if dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        if self.rank != 0:
            return None
        results = [r for part in parts for r in part[0]]
        tokens = sum(part[1] for part in parts)
        elapsed = max(part[2] for part in parts)
        cfg = self.cfg
        records = dialogue_records(self.eval_set.dialogues, results, cfg.timesteps)
        meta = {
            "checkpoint": checkpoint,
            "step": step,
            "data": self.data,
            "holdout": self.holdout,
            "timesteps": list(cfg.timesteps),
            "seed": cfg.seed,
            "config": cfg.model_dump(mode="json"),
            "ranks": len(parts),
            "tokens": tokens,
            "seconds": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
            "counts": dict(self.eval_set.counts),
        }
        return build_report(
            records, timesteps=cfg.timesteps, resamples=cfg.bootstrap, seed=cfg.seed, meta=meta
        )


def summary_line(report: dict[str, Any]) -> str:
    """One console line: the overall gains and intent accuracy."""
    a = report["all"]
    g = a["gain"]

    def gain(key: str) -> str:
        x = g[key]
        return "–" if not x["n"] else f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]"

    intent = a["intent"]["true"]
    return (
        f"{a['dialogues']} dialogues: ΔMSE replaced {gain('mse_replaced')} none "
        f"{gain('mse_none')}, ΔCE replaced {gain('ce_replaced')} none {gain('ce_none')}, "
        f"intent modality {100 * intent['modality']:.0f}% end {100 * intent['end']:.0f}%, "
        f"{report['tokens_per_s']:.0f} tok/s"
    )


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of the whole set, each depth and each task, as flat scalars
    (``gain_mse_replaced``, ``depth_n/gain_ce_none``, ``task/t_i_i1_n/intent_end``...)."""
    out: dict[str, float] = {
        "dialogues": report["all"]["dialogues"],
        "tokens_per_s": report["tokens_per_s"],
    }
    groups = {"": report["all"]}
    groups.update({f"depth_{k}/": v for k, v in report["by_depth"].items()})
    groups.update({f"task/{k}/": v for k, v in report["by_task"].items()})
    for prefix, s in groups.items():
        for variant, value in s["ce"].items():
            out[f"{prefix}ce_{variant}"] = value
        for variant, value in s["mse"].items():
            out[f"{prefix}mse_{variant}"] = value
        for key, g in s["gain"].items():
            if g["n"]:
                out[f"{prefix}gain_{key}"] = g["mean"]
                out[f"{prefix}gain_{key}_lo"] = g["lo"]
                out[f"{prefix}gain_{key}_hi"] = g["hi"]
        for kind in ("modality", "end"):
            out[f"{prefix}intent_{kind}"] = s["intent"]["true"][kind]
    return out
