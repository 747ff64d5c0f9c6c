"""``python -m train export``: a training checkpoint -> consolidated safetensors in BAGEL's layout.

Runs in one CPU process: the sharded DCP checkpoint is read into a plain (unsharded) model and
handed to the model's BAGEL adapter, which writes BAGEL's file names and tensor names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import typer
import yaml
from torch import nn

from train.checkpoint import MARKER, Checkpointer, single_process_quiet

export_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Export a checkpoint in BAGEL's layout.",
)


def find_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a complete checkpoint, else the newest one of a run dir."""
    if (path / MARKER).is_file():
        return path
    for root in (path / "ckpt", path):
        latest = Checkpointer(root, keep=1).latest()
        if latest is not None:
            return latest.path
    raise ValueError(f"{path} is neither a complete checkpoint nor a run directory holding one")


def load_checkpoint_model(checkpoint: str | Path, ema: bool = False) -> nn.Module:
    """The checkpoint's weights in a plain CPU ``ChatUMM`` (the EMA weights with ``ema``)."""
    from train.model import ChatUMM, ModelConfig

    checkpoint = Path(checkpoint)
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
    with torch.device("meta"):
        model = ChatUMM(ModelConfig.from_dict(saved["model"]))
    model.to_empty(device="cpu")
    with torch.no_grad():
        model.init_weights()  # fills the non-persistent buffers; every weight is then loaded
    state = {"app": {"model": model.state_dict()}}
    _load_single_process(state, checkpoint)
    model.load_state_dict(state["app"]["model"])
    if ema:
        keys = dcp.FileSystemReader(checkpoint).read_metadata().state_dict_metadata
        names = [k.removeprefix("ema.") for k in keys if k.startswith("ema.")]
        if not names:
            raise ValueError(
                f"{checkpoint} holds no EMA weights (trained with optim.ema_decay null)"
            )
        params = dict(model.named_parameters())
        averaged = {"ema": {n: torch.empty_like(params[n]) for n in names}}
        _load_single_process(averaged, checkpoint)
        with torch.no_grad():
            for name, value in averaged["ema"].items():
                params[name].copy_(value)
    return model


def _load_single_process(state: dict, checkpoint: Path) -> None:
    """DCP load in this process alone (it reshards the saved shards into full tensors)."""
    with single_process_quiet():
        dcp.load(state, checkpoint_id=checkpoint, no_dist=True)


@export_app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="a checkpoint directory, or a run directory"),
    out: Path = typer.Argument(..., help="directory for BAGEL's safetensors and configs"),
    ema: bool = typer.Option(False, help="export the EMA weights instead of the online ones"),
) -> None:
    """Write the checkpoint's model as BAGEL's consolidated safetensors."""
    from train.model.bagel_adapter import export_bagel_checkpoint

    path = find_checkpoint(checkpoint)
    model = load_checkpoint_model(path, ema=ema)
    export_bagel_checkpoint(model, out)
    # The run's tokenizer goes along, so the directory works as an --init-from source.
    tokenizer = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")).get("tokenizer")
    if tokenizer and Path(tokenizer).is_file():
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    typer.echo(f"exported {path} to {out}")
