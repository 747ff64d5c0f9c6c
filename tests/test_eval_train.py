"""The held-out split on both sides, ``eval.every`` in a short training run, and ``python -m
train eval`` on its checkpoint, in one process and on two gloo ranks under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synth.shards import iter_samples
from tests.train_fixtures import eval_config, write_stage_c_shards
from train.config import TrainConfig
from train.data import DataConfig, PackedLoader, default_tokenizer_path, load_tokenizer
from train.data.sampling import held_out
from train.data.source import resolve_files
from train.eval.dataset import select_rows
from train.loop import train
from train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 0.25
STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stage_c_shards(tmp_path_factory.mktemp("stage_c"), samples=40)


@pytest.fixture(scope="module")
def held(shards: Path) -> set[str]:
    ids = {s.sample_id for s in iter_samples(shards)}
    chosen = {i for i in ids if held_out(i, HOLDOUT)}
    assert 0 < len(chosen) < len(ids)
    return chosen


def _config(tmp: Path, name: str, **changes: object) -> Path:
    return eval_config(tmp, name, holdout=HOLDOUT, steps=STEPS, **changes)


def test_held_out_split_is_a_stable_fraction_of_ids() -> None:
    ids = [f"{i:024x}" for i in range(20_000)]
    share = sum(held_out(i, 0.02) for i in ids) / len(ids)
    assert 0.017 < share < 0.023
    assert [held_out(i, 0.02) for i in ids[:500]] == [held_out(i, 0.02) for i in ids[:500]]
    assert not any(held_out(i, 0.0) for i in ids[:500])
    # a larger fraction keeps every id a smaller one held out (splits nest)
    assert all(held_out(i, 0.1) for i in ids if held_out(i, 0.02))


def test_trainer_skips_and_eval_reads_exactly_the_held_out_ids(
    shards: Path, held: set[str]
) -> None:
    cfg = DataConfig.tiny(pack_tokens=512, max_dialogue_tokens=512, holdout=HOLDOUT, epochs=1)
    loader = PackedLoader([shards], cfg, load_tokenizer(default_tokenizer_path()))
    trained = {sid for batch in loader for sid in batch.sample_ids}
    assert trained and not trained & held
    assert loader.stats.held_out == len(held)
    assert len(trained) + len(held) == 40
    chosen, _, counts = select_rows(resolve_files([shards]), HOLDOUT, max_per_task=100, seed=0)
    rows = sum(len(r) for groups in chosen.values() for r in groups.values())
    assert rows == counts["eligible"] == len(held)


def test_eval_every_logs_during_training_and_changes_nothing_else(
    tmp_path: Path, shards: Path, held: set[str]
) -> None:
    plain = train(TrainConfig.from_yaml(_config(tmp_path, "plain")), [shards], tmp_path / "plain")
    probes = {"every": 2, "max_per_task": 1, "timesteps": [0.5, 0.9], "bootstrap": 100}
    cfg = TrainConfig.from_yaml(_config(tmp_path, "probed", eval=probes))
    assert train(cfg, [shards], tmp_path / "probed") == plain == STEPS

    def losses(run: str) -> list[tuple[float, float]]:
        return [(r["ce"], r["mse"]) for r in read_metrics(tmp_path / run)]

    assert losses("probed") == losses("plain")  # the probes draw from no training RNG
    records = [
        json.loads(line) for line in (tmp_path / "probed/eval.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [2, 4]
    assert all(
        r["dialogues"] >= 1 and "gain_mse_none" in r and r["tokens_per_s"] > 0 for r in records
    )
    report = json.loads((tmp_path / "probed/eval/step-0000004/report.json").read_text())
    assert {d["sample_id"] for d in report["dialogues"]} <= held
    assert not (tmp_path / "plain/eval.jsonl").exists()


def test_eval_every_needs_held_out_data(tmp_path: Path) -> None:
    raw = yaml.safe_load(_config(tmp_path, "x").read_text())
    raw["data"]["overrides"].pop("holdout")
    raw["eval"] = {"every": 10}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"eval\.every needs held-out data"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _eval_cli(launcher: list[str], run: Path, shards: Path, out: Path, *extra: str) -> dict:
    args = [
        *launcher, "-m", "train", "eval", "--checkpoint", str(run), "--data", str(shards),
        "--holdout", str(HOLDOUT), "--max-per-task", "1", "--timesteps", "0.5,0.9",
        "--bootstrap", "100", "--out", str(out), "--no-plot", *extra,
    ]  # fmt: skip
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dialogues: ΔMSE replaced" in done.stdout
    return json.loads((out / "report.json").read_text())


def test_eval_cli_on_a_checkpoint_alone_and_on_two_ranks(
    tmp_path: Path, shards: Path, held: set[str]
) -> None:
    run = tmp_path / "run"
    train(TrainConfig.from_yaml(_config(tmp_path, "tiny")), [shards], run)
    # One dialogue per forward (a 1-token pack budget) and an odd number of them: the second
    # rank runs one forward fewer, and must still take part in the last one (FSDP).
    tasks = sorted({s.task for s in iter_samples(shards) if s.sample_id in held})
    tasks = tasks[: len(tasks) - (1 - len(tasks) % 2)]
    extra = ["--pack-tokens", "1", *(arg for t in tasks for arg in ("--task", t))]
    one = _eval_cli([sys.executable], run, shards, tmp_path / "one", *extra)
    assert len(one["dialogues"]) == len(tasks) >= 3
    assert (tmp_path / "one/report.md").is_file() and not (tmp_path / "one/report.png").exists()
    assert one["step"] == STEPS and one["ranks"] == 1
    assert {d["sample_id"] for d in one["dialogues"]} <= held
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = _eval_cli(torchrun, run, shards, tmp_path / "two", *extra)
    assert two["ranks"] == 2
    assert [d["sample_id"] for d in two["dialogues"]] == [d["sample_id"] for d in one["dialogues"]]
    for a, b in zip(one["dialogues"], two["dialogues"], strict=True):
        for metric in ("ce", "mse"):
            assert a[metric].keys() == b[metric].keys()
            for v in a[metric]:
                assert a[metric][v] == pytest.approx(b[metric][v], abs=1e-5)
