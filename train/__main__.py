"""``python -m train``: train (under ``torchrun`` or as one process), ``export`` a checkpoint, or
talk to a model (``chat``, ``generate``: ``train/infer/cli.py``; ``demo`` in the browser:
``train/demo/``), or measure context tracking (``eval``: ``train/eval/cli.py``).

    torchrun --nproc-per-node N -m train --config CONFIG --data DIR [DIR ...] --out DIR \\
        [--max-steps K] [--resume] [--init-from BAGEL_DIR] [--profile N]
    python -m train export CHECKPOINT OUT_DIR [--ema]
    python -m train chat --checkpoint DIR
    python -m train generate --checkpoint DIR --in SHARDS --out DIR [--seed N]
    python -m train demo --checkpoint DIR [--port N] [--host 127.0.0.1]
    torchrun --nproc-per-node N -m train eval --checkpoint RUN --data DIR [DIR ...] --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

train_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,  # plain tracebacks: one per rank under torchrun
    help="Train ChatUMM on synthesized dialogue shards.",
)


@train_app.command()
def train(
    config: Path = typer.Option(..., help="training config YAML (e.g. train/configs/tiny.yaml)"),
    data: list[Path] = typer.Option(..., help="shard directories written by synth (repeatable)"),
    out: Path = typer.Option(..., help="run directory: checkpoints, metrics.jsonl, config"),
    max_steps: int | None = typer.Option(None, help="override max_steps of the config"),
    resume: bool = typer.Option(False, help="continue from the newest complete checkpoint"),
    init_from: Path | None = typer.Option(
        None, help="start from BAGEL's released checkpoint directory (ignored on resume)"
    ),
    profile: int = typer.Option(
        0, min=0, help="trace this many steps (after 3) with the torch profiler into OUT/profile"
    ),
) -> None:
    """Train; the resolved config and checkpoints go under --out."""
    from train.config import TrainConfig
    from train.loop import train as run

    try:
        cfg = TrainConfig.from_yaml(config, max_steps=max_steps)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    for directory in data:
        if not directory.is_dir():
            raise typer.BadParameter(
                f"{directory} is not a directory of shards", param_hint="--data"
            )
    try:
        run(cfg, list(data), out, resume=resume, init_from=init_from, profile=profile)
    except ValueError as err:  # a configuration problem: say what to fix, no traceback
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    # `--data A B` lists several directories after one flag (click wants the flag repeated).
    argv = sys.argv[1:]
    if argv[:1] == ["export"]:
        from train.export import export_app

        export_app(argv[1:], prog_name="python -m train export")
        return
    if argv[:1] == ["eval"]:
        from train.eval.cli import eval_app

        eval_app(_expand_multi(argv[1:], "--data"), prog_name="python -m train eval")
        return
    if argv[:1] == ["demo"]:
        from train.demo.cli import demo_app

        demo_app(argv[1:], prog_name="python -m train demo")
        return
    if argv[:1] in (["chat"], ["generate"]):
        from train.infer.cli import chat_app, generate_app

        app = chat_app if argv[0] == "chat" else generate_app
        app(argv[1:], prog_name=f"python -m train {argv[0]}")
        return
    train_app(_expand_multi(argv, "--data"), prog_name="python -m train")


def _expand_multi(argv: list[str], flag: str) -> list[str]:
    out: list[str] = []
    taking = False
    for arg in argv:
        if arg == flag:
            taking = True
            continue
        if arg.startswith("--"):
            taking = False
        out.extend([flag, arg] if taking else [arg])
    return out


if __name__ == "__main__":
    main()
