"""Stage-c-shaped shard directories for the training tests.

Until ``synth run stage-c`` exists, the shards are written through the real contract and the
real ``ShardWriter`` (real PNG bytes via PIL, ``tests.builders``): interleaved-output dialogues
of every stage-c task, with their history turns. Swap in real stage-c output when it lands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from synth.shards import ShardConfig, ShardWriter
from taxonomy import TASKS
from tests.builders import build_sample

ROOT = Path(__file__).resolve().parents[1]
STAGE_C_TASKS = sorted(name for name, spec in TASKS.items() if spec.stage == "c")


def write_stage_c_shards(
    out_dir: Path, samples: int = 40, row_group_rows: int = 4, corrupt: tuple[int, ...] = ()
) -> Path:
    """``samples`` stage-c dialogues (tasks round-robin, seeds 0..samples-1) in ``out_dir``.

    Small row groups so a 2-rank run gets row groups on both ranks. The samples at the
    ``corrupt`` indices carry image bytes that are not an image (valid by the contract, which
    does not decode images; the loader must skip and count them)."""
    with ShardWriter(
        out_dir,
        config={"fixture": "stage-c", "samples": samples},
        shard=ShardConfig(max_rows=samples, row_group_rows=row_group_rows),
    ) as writer:
        for i in range(samples):
            sample = build_sample(STAGE_C_TASKS[i % len(STAGE_C_TASKS)], seed=i)
            if i in corrupt:
                broken = sample.images[0].model_copy(update={"data": b"not an image"})
                sample = sample.model_copy(update={"images": (broken, *sample.images[1:])})
            writer.add(sample)
            writer.mark(i + 1)
        writer.close({"samples": samples})
    return out_dir


def train_tiny_run(tmp: Path, data: Path) -> Path:
    """Two steps of the tiny recipe under torchrun (one process) on ``data``: a run directory
    with one complete checkpoint, as a user's ``torchrun -m train`` writes it."""
    raw = yaml.safe_load((ROOT / "train/configs/tiny.yaml").read_text())
    raw["data"]["overrides"] = {"pack_tokens": 512, "max_dialogue_tokens": 512}
    raw["checkpoint"] = {"every": 2, "keep": 1}
    raw["log"].update(tensorboard=False, progress=False)
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args = ["--config", config, "--data", data, "--out", out, "--max-steps", "2"]
    result = subprocess.run(
        [*torchrun, "--nproc-per-node", "1", "-m", "train", *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "ckpt" / "step-0000002" / "COMPLETE").is_file()
    return out


def eval_config(tmp: Path, name: str, *, holdout: float, steps: int, **changes: object) -> Path:
    """A tiny training config that holds out ``holdout`` of the ids and checkpoints at its last
    step, written to ``tmp/<name>.yaml``; ``changes`` replace top-level sections."""
    raw = yaml.safe_load((ROOT / "train/configs/tiny.yaml").read_text())
    raw["data"]["overrides"] = {"pack_tokens": 512, "max_dialogue_tokens": 512, "holdout": holdout}
    raw["checkpoint"] = {"every": steps, "keep": 1}
    raw["log"] = {"tensorboard": False, "progress": False}
    raw["max_steps"] = steps
    raw.update(changes)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
