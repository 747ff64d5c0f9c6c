"""Atomic, resumable training checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<out>/ckpt``::

    step-0000500/            a complete checkpoint
        .metadata, __*.distcp  DCP: model, optimizer, scheduler, EMA, per-rank loader and RNG
        meta.json            step, world size, wall time
        config.yaml          the resolved training config (plus the model and data configs)
        COMPLETE             written last, before the rename
    step-0001000.tmp/        a save in progress (or one a crash interrupted): never read

A save writes everything into ``step-N.tmp``, writes ``COMPLETE``, fsyncs, and renames the
directory to ``step-N``. A crash at any point leaves the newest good checkpoint untouched; the
next save (or resume) removes the leftover ``.tmp``. ``latest()`` picks the newest directory
with the marker. This assumes ``<out>`` is one filesystem visible to every rank (as torchtitan
and DCP's FileSystemWriter do).

Model and optimizer go through ``get_state_dict``/``set_state_dict`` so FSDP2's sharded
DTensors are saved shard by shard and can be reloaded on another mesh. Loader and RNG states
differ per rank and are stored under per-rank keys, so a resume needs the same DP world size.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from synth.shards import fsync_dir

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{7,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


class ModelOptimizerState(Stateful):
    """Model + optimizer state as DCP sees it (sharded, reloadable on a different mesh)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict["optim"],
        )


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    world_size: int


class Checkpointer:
    """Saves and finds checkpoints under ``root``; every rank calls ``save`` and ``load``."""

    def __init__(self, root: str | Path, keep: int, rank: int = 0, world_size: int = 1):
        self.root = Path(root)
        self.keep, self.rank, self.world_size = keep, rank, world_size

    # --- finding ---------------------------------------------------------------------------
    def complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first."""
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                match = _STEP_DIR.match(path.name)
                if match and (path / MARKER).is_file():
                    meta = json.loads((path / "meta.json").read_text())
                    found.append(CheckpointInfo(path, int(match.group(1)), meta["world_size"]))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> CheckpointInfo | None:
        done = self.complete()
        return done[-1] if done else None

    # --- saving ----------------------------------------------------------------------------
    def save(
        self,
        step: int,
        states: dict[str, Any],
        per_rank: dict[str, Any],
        files: dict[str, str],
    ) -> Path:
        """Write checkpoint ``step``. ``states``: DCP state (tensors, Stateful objects);
        ``per_rank``: this rank's picklable state (loader, RNG); ``files``: text files rank 0
        writes next to the state (the resolved config)."""
        final = self.root / step_dir_name(step)
        tmp = final.with_name(final.name + ".tmp")
        if (final / MARKER).is_file():
            # Saved already (the state of a step never changes); never delete a good checkpoint.
            return final
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            for leftover in self.root.glob("step-*.tmp"):
                shutil.rmtree(leftover)
            if final.exists():  # a directory without the marker is not a checkpoint
                shutil.rmtree(final)
            tmp.mkdir()
        _barrier()
        state = dict(states)
        state[f"rank{self.rank}"] = pickle.dumps(per_rank)
        with single_process_quiet():
            dcp.save(state, checkpoint_id=tmp, no_dist=not _distributed())
        if self.rank == 0:
            meta = {"step": step, "world_size": self.world_size, "saved_at": time.time()}
            for name, text in {"meta.json": json.dumps(meta, indent=2), **files}.items():
                _write_synced(tmp / name, text)
            _write_synced(tmp / MARKER, "")
            os.replace(tmp, final)
            fsync_dir(self.root)
            self._prune()
        _barrier()
        return final

    def _prune(self) -> None:
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old.path)

    # --- loading ---------------------------------------------------------------------------
    def load(self, info: CheckpointInfo, states: dict[str, Any]) -> dict[str, Any]:
        """Load into ``states`` in place (Stateful objects get ``load_state_dict``); returns
        this rank's per-rank state."""
        if info.world_size != self.world_size:
            raise ValueError(
                f"{info.path} was saved by {info.world_size} ranks; this run has "
                f"{self.world_size}. Resume with the same number of ranks (the data loader "
                "and RNG states are per rank)."
            )
        key = f"rank{self.rank}"
        state = dict(states)
        state[key] = b""
        with single_process_quiet():
            dcp.load(state, checkpoint_id=info.path, no_dist=not _distributed())
        return pickle.loads(state[key])


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def single_process_quiet() -> Iterator[None]:
    """DCP warns when used without a process group; that is intended here (tests, export)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*assuming the intent is to (save|load) in a single"
        )
        yield


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()
