"""The generation report from ``eval.generation`` during a short training run, and from
``python -m train eval --generate`` on its checkpoint under torchrun: the same dialogues, the
same outputs, the probes' numbers beside them, and training left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.eval_support import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.train_fixtures import eval_config, write_stage_c_shards
from train.config import TrainConfig
from train.data.sampling import held_out
from train.loop import train
from train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 0.25
STEPS = 4
GENERATION = {"per_task": 1, "every": 4, "mode": "image", "max_tokens": 4, "image": {"steps": 2}}


def _config(tmp: Path, name: str, **changes: object) -> Path:
    return eval_config(tmp, name, holdout=HOLDOUT, steps=STEPS, **changes)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]


def test_generation_during_training_and_from_the_cli_on_two_ranks(tmp_path: Path) -> None:
    shards = write_stage_c_shards(tmp_path / "stage_c", samples=40)
    plain = train(TrainConfig.from_yaml(_config(tmp_path, "plain")), [shards], tmp_path / "plain")
    probes = {
        "every": 2,
        "max_per_task": 1,
        "timesteps": [0.5],
        "bootstrap": 50,
        "generation": GENERATION,
    }
    run = tmp_path / "probed"
    assert train(TrainConfig.from_yaml(_config(tmp_path, "probed", eval=probes)), [shards], run)
    assert plain == STEPS

    def losses(name: str) -> list[tuple[float, float]]:
        return [(r["ce"], r["mse"]) for r in read_metrics(tmp_path / name)]

    assert losses("probed") == losses("plain")  # generation draws from no training RNG
    assert not (run / "eval/step-0000002/generation").exists()  # generation.every = 4
    during = run / "eval/step-0000004/generation"
    rows = _rows(during)
    assert (during / "index.html").is_file()
    assert rows and all(held_out(r["sample_id"], HOLDOUT) for r in rows)
    assert len({r["task"] for r in rows}) == len(rows)  # one per task
    probed = json.loads((run / "eval/step-0000004/report.json").read_text())["dialogues"]
    assert {r["sample_id"] for r in rows} == {d["sample_id"] for d in probed}
    assert all(r["probes"] is not None for r in rows)

    out = tmp_path / "cli"
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "-m", "train", "eval", "--checkpoint", str(run), "--data", str(shards),
        "--holdout", str(HOLDOUT), "--max-per-task", "1", "--timesteps", "0.5",
        "--bootstrap", "50", "--no-plot", "--out", str(out),
        "--generate", "1", "--generate-mode", "image", "--max-tokens", "4", "--steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generation.jsonl" in done.stdout
    assert "rank 0: generated" in done.stdout and "rank 1: generated" in done.stdout
    cli = _rows(out / "generation")
    # the same weights (the step-4 checkpoint), seeds and options: the same outputs, each rank
    # having generated its share
    strip = [{k: v for k, v in r.items() if k != "probes"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "probes"} for r in cli] == strip
    for a, b in zip(rows, cli, strict=True):
        for pa, pb in zip(a["generated"], b["generated"], strict=True):
            if pa["type"] == "image":
                assert (during / pa["path"]).read_bytes() == (
                    out / "generation" / pb["path"]
                ).read_bytes()
    report = json.loads((out / "report.json").read_text())["dialogues"]
    by_id = {d["sample_id"]: d for d in report}
    for row in cli:
        assert row["probes"]["ce"] == pytest.approx(by_id[row["sample_id"]]["ce"])
    assert (out / "generation/index.html").is_file()
