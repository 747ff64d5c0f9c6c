"""``python -m train eval``: the context probes on a checkpoint, on one process or under torchrun.

    python -m train eval --checkpoint runs/tiny --data out/stage-a out/stage-b out/stage-c \\
        --holdout 0.1 --out runs/tiny/eval
    torchrun --nproc-per-node 8 -m train eval --checkpoint RUN --data DIR --out DIR

The model is rebuilt from the checkpoint's own resolved config (architecture, data transforms,
tokenizer, parallelism) and sharded as in training, then the checkpoint's weights (or its EMA
weights) are loaded into it. Rank 0 writes ``report.json``, ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import typer
import yaml
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import register_fsdp_forward_method

from train.checkpoint import single_process_quiet

eval_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Measure context tracking: per-task teacher-forced probes of a checkpoint.",
)


def _load_weights(model: nn.Module, checkpoint: Path, ema: bool) -> None:
    """The checkpoint's model weights (sharded or not, any mesh), or its EMA weights."""
    state = get_model_state_dict(model)
    with single_process_quiet():
        dcp.load({"app": {"model": state}}, checkpoint_id=checkpoint, no_dist=not _dist())
    set_model_state_dict(model, state)
    if not ema:
        return
    from train.optim import canonical_name

    keys = dcp.FileSystemReader(checkpoint).read_metadata().state_dict_metadata
    if not any(k.startswith("ema.") for k in keys):
        raise ValueError(f"{checkpoint} holds no EMA weights (trained with optim.ema_decay null)")
    params = {canonical_name(n): p for n, p in model.named_parameters()}
    averaged = {n: torch.empty_like(p) for n, p in params.items() if f"ema.{n}" in keys}
    with single_process_quiet():
        dcp.load({"ema": averaged}, checkpoint_id=checkpoint, no_dist=not _dist())
    with torch.no_grad():
        for name, value in averaged.items():
            params[name].copy_(value)


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def evaluate_checkpoint(
    checkpoint: Path,
    data: list[Path],
    out: Path,
    options: dict[str, Any],
    *,
    ema: bool,
    device: str,
) -> dict[str, Any] | None:
    """Probe ``checkpoint`` on ``data``; rank 0 writes the report into ``out`` and returns it."""
    from train.config import TrainConfig
    from train.data import DataConfig, load_tokenizer
    from train.eval.config import EvalConfig
    from train.eval.render import write_report
    from train.eval.run import Evaluator, summary_line
    from train.export import find_checkpoint
    from train.loop import build_model, init_runtime
    from train.model import ModelConfig

    path = find_checkpoint(checkpoint)
    saved = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    eval_cfg = EvalConfig.model_validate(options)
    model_cfg = ModelConfig.from_dict(saved["model"])
    data_cfg = DataConfig.model_validate(saved["data"])
    tokenizer = load_tokenizer(saved["tokenizer"])
    rt = init_runtime(device)
    try:
        cfg = TrainConfig.model_validate(saved["train"])
        if rt.device.type == "cpu":  # a GPU run's checkpoint on a CPU: fp32, dense attention
            cpu = {"mixed_precision": "fp32", "attention": "sdpa", "compile": False}
            cfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update=cpu)})
        model = build_model(cfg, model_cfg, rt, None)
        register_fsdp_forward_method(model, "token_losses")
        _load_weights(model, path, ema)
        evaluator = Evaluator(
            eval_cfg,
            data,
            holdout=eval_cfg.holdout,
            data_cfg=data_cfg,
            model_cfg=model_cfg,
            tokenizer=tokenizer,
            attention=cfg.parallel.attention,
            device=rt.device,
            rank=rt.rank,
            world=rt.world_size,
        )
        step = int(json.loads((path / "meta.json").read_text())["step"])
        report = evaluator.run(model, checkpoint=str(path), step=step)
        if report is not None:
            written = write_report(report, out, plot=eval_cfg.plot)
            typer.echo(summary_line(report))
            typer.echo("wrote " + ", ".join(str(p) for p in written))
        return report
    finally:
        dist.destroy_process_group()


@eval_app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="a checkpoint directory, or a run directory"),
    data: list[Path] = typer.Option(..., help="shard directories to evaluate (repeatable)"),
    out: Path = typer.Option(..., help="directory for report.json, report.md, report.png"),
    holdout: float | None = typer.Option(
        None, help="evaluate only the held-out fraction of sample ids (as data.holdout)"
    ),
    max_per_task: int = typer.Option(32, help="dialogues per task (a fixed, seeded choice)"),
    task: list[str] = typer.Option([], help="probe only this task (repeatable; default all)"),
    timesteps: str = typer.Option("0.3,0.6,0.9", help="noise levels of the image probes"),
    seed: int = typer.Option(0, help="seeds the choice, donors, noise and bootstrap"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for the 95% intervals"),
    pack_tokens: int | None = typer.Option(None, help="tokens per forward (default: training's)"),
    plot: bool = typer.Option(True, help="write report.png (needs matplotlib)"),
    ema: bool = typer.Option(False, help="evaluate the EMA weights"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Teacher-forced context probes per task: true, replaced and no history."""
    for directory in data:
        if not directory.exists():
            raise typer.BadParameter(f"{directory} does not exist", param_hint="--data")
    try:
        levels = tuple(float(t) for t in timesteps.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{timesteps!r} is not a comma-separated list of numbers", param_hint="--timesteps"
        ) from None
    options = {
        "holdout": holdout,
        "max_per_task": max_per_task,
        "tasks": tuple(task),
        "timesteps": levels,
        "seed": seed,
        "bootstrap": bootstrap,
        "pack_tokens": pack_tokens,
        "plot": plot,
    }
    try:
        evaluate_checkpoint(checkpoint, list(data), out, options, ema=ema, device=device)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
