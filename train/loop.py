"""The training run: set up ranks, build and shard the model, stream packs, step, log, save.

``train(...)`` is what ``python -m train`` (under ``torchrun`` or as one process) calls. Every rank
runs the same code; rank 0 alone writes logs and checkpoint metadata.

Data: rank ``r`` with ``grad_accum = A`` runs ``A`` loaders, loader ``j`` being data-parallel
rank ``r * A + j`` of ``world * A``. The packs of a step therefore depend only on
``world * A``: one process accumulating two packs trains on exactly the packs two processes
take one each, which is what makes the 1-rank and 2-rank steps comparable.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from train.checkpoint import Checkpointer, ModelOptimizerState, rng_state, set_rng_state
from train.config import TrainConfig
from train.metrics import CompileCounter, MetricsLogger, StepProfiler, peak_flops
from train.optim import EMA, build_optimizer, build_scheduler, trainable_summary
from train.parallelize import build_mesh, parallelize
from train.resolve import (
    apply_freeze,
    flops_per_token,
    resolve_data_config,
    resolve_model_config,
    resolve_tokenizer_path,
    resolved_config_text,
)
from train.step import StepResult, train_step

if TYPE_CHECKING:
    from train.batch import PackedBatch
    from train.data import DataConfig, PackedLoader
    from train.model import ModelConfig


@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    def barrier(self) -> None:
        dist.barrier()


def init_runtime(device_pref: str) -> Runtime:
    """Join the process group: ``env://`` under torchrun, an in-process store when alone."""
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device("cpu")
    if use_cuda:  # bind the GPU before NCCL initialises
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if "RANK" in os.environ:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    return Runtime(rank, world, device)


class StopFlag:
    """Set by SIGTERM (and SIGINT); the loop saves a checkpoint and exits at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signum, self._previous[signal.Signals(signum)])  # a second one acts as usual

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def initial_model(cfg: TrainConfig, model_cfg: ModelConfig, init_from: Path | None) -> nn.Module:
    """The step-0 model, full and on CPU: built on the meta device, materialised and initialised
    with the config's seed (the same on every rank, so every rank holds the same weights before
    sharding), then BAGEL's weights with ``init_from``."""
    from train.model import ChatUMM

    with torch.device("meta"):
        model = ChatUMM(model_cfg)
    model.to_empty(device="cpu")
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        model.init_weights()
    if init_from is not None:
        from train.model.bagel_adapter import load_bagel_checkpoint

        load_bagel_checkpoint(model, init_from)
    return model


def build_model(
    cfg: TrainConfig, model_cfg: ModelConfig, rt: Runtime, init_from: Path | None
) -> nn.Module:
    """The step-0 model, frozen where configured and sharded onto the device."""
    model = initial_model(cfg, model_cfg, init_from)
    apply_freeze(model, cfg.optim.freeze)
    mesh = build_mesh(rt.device.type, rt.world_size, cfg.parallel.num_shard)
    parallelize(model, mesh, cfg.parallel, rt.device)
    return model


def _loaders(
    cfg: TrainConfig,
    data: list[Path],
    data_cfg: DataConfig,
    tokenizer_path: Path,
    vocab_size: int,
    rt: Runtime,
) -> list[PackedLoader]:
    from train.data import PackedLoader, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary holds "
            f"{vocab_size}; raise model.overrides.llm.vocab_size or use the model's tokenizer"
        )
    accum = cfg.grad_accum
    return [
        PackedLoader(
            [str(p) for p in data],
            data_cfg,
            tokenizer,
            dp_rank=rt.rank * accum + j,
            dp_world_size=rt.world_size * accum,
        )
        for j in range(accum)
    ]


def train(
    cfg: TrainConfig,
    data: list[Path],
    out: Path,
    *,
    resume: bool = False,
    init_from: Path | None = None,
    profile: int = 0,
) -> int:
    """Run training; returns the last completed step. Call inside or outside torchrun.
    ``profile``: trace that many steps with the torch profiler (``StepProfiler``)."""
    rt = init_runtime(cfg.device)
    try:
        return _train(cfg, data, out, rt, resume=resume, init_from=init_from, profile=profile)
    finally:
        dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    data: list[Path],
    out: Path,
    rt: Runtime,
    *,
    resume: bool,
    init_from: Path | None,
    profile: int = 0,
) -> int:
    ckpt = Checkpointer(
        out / "ckpt", keep=cfg.checkpoint.keep, rank=rt.rank, world_size=rt.world_size
    )
    latest = ckpt.latest()
    if latest is not None and not resume:
        raise ValueError(
            f"{out} already holds checkpoint {latest.path.name}; pass --resume to continue it "
            "or choose a fresh --out"
        )
    # BAGEL's weights start a fresh run only; a resumed one takes everything from its checkpoint.
    fresh_from = init_from if latest is None else None
    model_cfg = resolve_model_config(cfg, fresh_from, latest)
    data_cfg = resolve_data_config(cfg, model_cfg)
    tokenizer_path = resolve_tokenizer_path(cfg, fresh_from, latest)
    config_text = resolved_config_text(cfg, model_cfg, data_cfg, tokenizer_path)
    model = build_model(cfg, model_cfg, rt, fresh_from)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    ema = EMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    loaders = _loaders(cfg, data, data_cfg, tokenizer_path, model_cfg.llm.vocab_size, rt)

    states: dict[str, Any] = {"app": ModelOptimizerState(model, optimizer), "scheduler": scheduler}
    if ema is not None:
        states["ema"] = ema.state_dict()
    step = nonfinite = 0
    if latest is None and resume and rt.rank == 0:
        print(f"--resume: no complete checkpoint under {ckpt.root}; starting fresh", flush=True)
    if latest is not None:
        per_rank = ckpt.load(latest, states)
        if ema is not None:
            ema.load_state_dict(states["ema"])
        for loader, state in zip(loaders, per_rank["loaders"], strict=True):
            loader.load_state_dict(state)
        set_rng_state(per_rank["rng"])
        step, nonfinite = per_rank["step"], per_rank["nonfinite"]

    if rt.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config_text, encoding="utf-8")
    log = MetricsLogger(
        out,
        rank=rt.rank,
        start_step=step,
        max_steps=cfg.max_steps,
        tensorboard=cfg.log.tensorboard,
        progress=cfg.log.progress,
    )
    trainable, frozen = trainable_summary(model.named_parameters())
    log.message(
        f"{'resumed at step ' + str(step) if step else 'starting'}: {rt.world_size} rank(s) on "
        f"{rt.device.type}, {trainable / 1e6:.2f}M trainable / {frozen / 1e6:.2f}M frozen "
        f"params (local shards), {cfg.grad_accum * rt.world_size} pack(s) per step"
    )

    def save(at: int) -> None:
        per_rank = {
            "loaders": [loader.state_dict() for loader in loaders],
            "rng": rng_state(),
            "step": at,
            "nonfinite": nonfinite,
        }
        path = ckpt.save(at, states, per_rank, {"config.yaml": config_text})
        log.message(f"saved checkpoint {path}")

    probes = None
    if cfg.eval.every:  # context probes on held-out data (train/eval)
        from train.eval.hook import TrainingEval

        probes = TrainingEval(
            cfg, data, data_cfg, model_cfg, tokenizer_path, model, rt, out, step, log.message
        )
    stop = StopFlag()
    peak = peak_flops(rt.device, cfg.log.peak_tflops)
    streams: list[Iterator[PackedBatch]] = [iter(loader) for loader in loaders]
    compiles = CompileCounter()
    profiler = (
        StepProfiler(out / "profile", rank=rt.rank, steps=profile, device=rt.device)
        if profile
        else None
    )
    model.train()
    try:
        while step < cfg.max_steps:
            started = time.perf_counter()
            micro = [pack for s in streams if (pack := next(s, None)) is not None]
            data_s = time.perf_counter() - started
            # data.epochs was finite and some rank ran out: every rank must stop together
            if _any_rank(len(micro) < len(streams), rt.device):
                log.message(f"data exhausted after step {step}")
                if step:
                    save(step)
                break
            result = train_step(
                model,
                optimizer,
                micro,
                step=step + 1,
                seed=cfg.seed,
                dp_rank=rt.rank,
                dp_world=rt.world_size,
                ce_weight=cfg.optim.ce_weight,
                mse_weight=cfg.optim.mse_weight,
                grad_clip=cfg.optim.grad_clip,
                attention=cfg.parallel.attention,
                device=rt.device,
                stop_requested=stop.requested,
            )
            lr = float(scheduler.get_last_lr()[0])
            step += 1
            if result.finite:
                scheduler.step()
                if ema is not None:
                    ema.update(model)
            else:
                nonfinite += 1
                log.message(
                    f"step {step}: non-finite loss or gradient, update skipped ({nonfinite})"
                )
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            elapsed = time.perf_counter() - started
            if profiler is not None:
                profiler.step()
            if step % cfg.log.every == 0 or step == cfg.max_steps:
                logged = StepLog(step, lr, result, elapsed, micro, nonfinite)
                record = _metrics(logged, model_cfg, peak, rt, loaders)
                log.log({**record, "data_s": data_s, "compiles": compiles.read()})
            if probes is not None:
                probes.maybe_run(model, step)
            if nonfinite > cfg.max_nonfinite:
                raise RuntimeError(
                    f"{nonfinite} steps had a non-finite loss or gradient (max_nonfinite="
                    f"{cfg.max_nonfinite}); stopping. Lower the learning rate or inspect the data."
                )
            if result.stop_requested:
                save(step)
                log.message(f"stop requested (SIGTERM): saved step {step}, exiting")
                break
            final = step == cfg.max_steps and cfg.checkpoint.save_final
            if step % cfg.checkpoint.every == 0 or final:
                save(step)
    finally:
        if profiler is not None:
            profiler.stop()
        stop.restore()
        log.close()
        if probes is not None:
            probes.close()
    return step


def _any_rank(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@dataclass(frozen=True)
class StepLog:
    """What one completed step hands to the metrics line."""

    step: int
    lr: float  # the rate the step was taken with
    result: StepResult
    elapsed_s: float
    packs: Sequence[PackedBatch]  # this rank's packs of the step
    nonfinite: int  # steps skipped so far for a non-finite loss or gradient


def _metrics(
    s: StepLog,
    model_cfg: ModelConfig,
    peak: float | None,
    rt: Runtime,
    loaders: Sequence[PackedLoader],
) -> dict[str, Any]:
    """The metrics line of a step (a collective: every rank calls it for the data counters)."""
    r = s.result
    tokens_per_s = r.real_tokens / s.elapsed_s
    flops = flops_per_token(model_cfg, s.packs)
    record: dict[str, Any] = {
        "step": s.step,
        "ce": r.ce,
        "mse": r.mse,
        "lr": s.lr,
        "grad_norm": r.grad_norm,
        "tokens": r.real_tokens,
        "tokens_per_s": tokens_per_s,
        "packing": r.real_tokens / r.pack_tokens,
        "mfu": flops * tokens_per_s / (peak * rt.world_size) if peak else None,
        "step_s": s.elapsed_s,
        "nonfinite_steps": s.nonfinite,
    }
    if rt.device.type == "cuda":
        record["peak_mem_gib"] = torch.cuda.max_memory_allocated(rt.device) / 2**30
    record.update(_data_counters(loaders))
    return record


def _data_counters(loaders: Sequence[PackedLoader]) -> dict[str, Any]:
    """The loaders' counters summed over every loader of every rank (a collective)."""
    from train.data import LoaderStats

    mine = LoaderStats.merged([loader.stats for loader in loaders])
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    total = LoaderStats.merged(everyone)
    return {
        "rows_read": total.rows_read,
        "dialogues": total.dialogues,
        "skipped_too_long": total.too_long,
        "skipped_corrupt": dict(total.corrupt),
        "packing_efficiency": total.packing_efficiency,
    }
