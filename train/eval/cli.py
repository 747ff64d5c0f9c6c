"""``python -m train eval``: the context probes on a checkpoint, on one process or under torchrun.

    python -m train eval --checkpoint runs/tiny --data out/stage-a out/stage-b out/stage-c \\
        --holdout 0.1 --out runs/tiny/eval [--generate 2]
    torchrun --nproc-per-node 8 -m train eval --checkpoint RUN --data DIR --out DIR

The model is rebuilt from the checkpoint's own resolved config (architecture, data transforms,
tokenizer, parallelism) and sharded as in training, then the checkpoint's weights (or its EMA
weights) are loaded into it. Rank 0 writes ``report.json``, ``report.md`` and ``report.png``.

``--generate N`` adds the generation report (``train.eval.generation``) in ``OUT/generation/``:
the probe model is dropped, each rank loads the checkpoint unsharded for inference
(``train.infer.load_assets``) and generates its share of the dialogues.
"""

from __future__ import annotations

import gc
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
    probes: bool = True,
) -> dict[str, Any] | None:
    """Probe ``checkpoint`` on ``data``; rank 0 writes the report into ``out`` and returns it.
    With ``generation.per_task`` set, the generation report follows in ``out/generation``."""
    from train.eval.config import EvalConfig
    from train.export import find_checkpoint
    from train.loop import init_runtime

    path = find_checkpoint(checkpoint)
    saved = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    eval_cfg = EvalConfig.model_validate(options)
    step = int(json.loads((path / "meta.json").read_text())["step"])
    rt = init_runtime(device)
    try:
        report = _probe(path, saved, eval_cfg, data, out, rt, ema, step) if probes else None
        if eval_cfg.generation.per_task:
            _generate(path, eval_cfg, data, out / "generation", rt, ema, step, report)
        return report
    finally:
        dist.destroy_process_group()


def _probe(
    path: Path,
    saved: dict[str, Any],
    eval_cfg: Any,
    data: list[Path],
    out: Path,
    rt: Any,
    ema: bool,
    step: int,
) -> dict[str, Any] | None:
    from train.config import TrainConfig
    from train.data import DataConfig, load_tokenizer
    from train.eval.render import write_report
    from train.eval.run import Evaluator, summary_line
    from train.loop import build_model
    from train.model import ModelConfig

    model_cfg = ModelConfig.from_dict(saved["model"])
    data_cfg = DataConfig.model_validate(saved["data"])
    tokenizer = load_tokenizer(saved["tokenizer"])
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
    report = evaluator.run(model, checkpoint=str(path), step=step)
    if report is not None:
        written = write_report(report, out, plot=eval_cfg.plot)
        typer.echo(summary_line(report))
        typer.echo("wrote " + ", ".join(str(p) for p in written))
    return report


def _generate(
    path: Path,
    eval_cfg: Any,
    data: list[Path],
    out: Path,
    rt: Any,
    ema: bool,
    step: int,
    report: dict[str, Any] | None,
) -> None:
    """The generation report; every rank takes part (each generates its share)."""
    from train.eval.generation import GenerationReport
    from train.infer.load import load_assets

    generation = GenerationReport(
        eval_cfg.generation,
        data,
        holdout=eval_cfg.holdout,
        seed=eval_cfg.seed,
        tasks=eval_cfg.tasks,
    )
    if rt.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()  # the probe model is gone: its cached blocks are not needed
    assets = load_assets(path, device=rt.device, ema=ema)
    written = generation.run(
        assets,
        out,
        checkpoint=str(path),
        step=step,
        rank=rt.rank,
        world=rt.world_size,
        probes=report["dialogues"] if report else (),
        progress=lambda line: typer.echo(f"rank {rt.rank}: {line}"),
    )
    if written is not None:
        typer.echo("wrote " + ", ".join(str(p) for p in written))


def _image_options(items: list[str], steps: int | None) -> dict[str, Any]:
    """KEY=VALUE pairs, each value read as YAML (``cfg_interval=[0.4,1.0]``); checked later
    against ``ImageOptions``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--image-option")
        options[key.strip()] = yaml.safe_load(value)
    if steps is not None:
        options["steps"] = steps
    return options


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
    probes: bool = typer.Option(True, help="run the probes (--no-probes: only --generate)"),
    generate: int = typer.Option(
        0, help="generate the final turn of this many dialogues per task (HTML report)"
    ),
    generate_mode: str = typer.Option("auto", help="auto (the model decides), image or text"),
    max_tokens: int = typer.Option(256, help="tokens per generated text part at most"),
    steps: int | None = typer.Option(None, help="image sampling steps (default 50)"),
    image_option: list[str] = typer.Option(
        [], help="any other image option of the generation, KEY=VALUE (repeatable)"
    ),
) -> None:
    """Teacher-forced context probes per task (true, replaced and no history); with
    --generate, the generated final turns beside the references as an HTML page."""
    if not probes and not generate:
        raise typer.BadParameter("nothing to do: --no-probes needs --generate N")
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
        "generation": {
            "per_task": generate,
            "mode": generate_mode,
            "max_tokens": max_tokens,
            "image": _image_options(image_option, steps),
        },
    }
    try:
        evaluate_checkpoint(
            checkpoint, list(data), out, options, ema=ema, device=device, probes=probes
        )
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
