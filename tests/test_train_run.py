"""End-to-end training on CPU: the real tiny ChatUMM, the real loader, stage-c-shaped shards.

One uninterrupted run (module fixture) is the reference for: losses go down; a SIGKILLed and
resumed run reproduces its losses exactly; its checkpoint exports to BAGEL's layout and
re-imports exactly. A 2-rank gloo run is compared with a 1-rank run accumulating the same packs.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.train_fixtures import write_stage_c_shards
from train.config import TrainConfig
from train.loop import train
from train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16


def _config(tmp: Path, name: str, **changes: object) -> Path:
    """tiny.yaml with sections updated by ``changes`` (``optim={...}`` merges into optim)."""
    raw = yaml.safe_load((ROOT / "train/configs/tiny.yaml").read_text())
    raw["data"]["overrides"] = {"pack_tokens": 512, "max_dialogue_tokens": 512}
    raw["checkpoint"] = {"every": 4, "keep": 5}
    raw["log"]["tensorboard"] = False
    for key, value in changes.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "train", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stage_c_shards(tmp_path_factory.mktemp("stage_c"), samples=40)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, shards: Path) -> Path:
    """The uninterrupted run (in this process, one rank)."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = TrainConfig.from_yaml(_config(tmp, "tiny"), max_steps=STEPS)
    out = tmp / "run"
    assert train(cfg, [shards], out) == STEPS
    return out


def test_tiny_run_lowers_both_losses(reference: Path) -> None:
    records = read_metrics(reference)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    first, last = records[:4], records[-4:]
    for key in ("ce", "mse"):
        before = statistics.fmean(r[key] for r in first)
        after = statistics.fmean(r[key] for r in last)
        assert after < before, f"{key} did not go down: {before:.4f} -> {after:.4f}"
    for r in records:
        assert {"step", "ce", "mse", "lr", "grad_norm", "tokens_per_s", "packing"} <= set(r)
        assert 0 < r["packing"] <= 1 and r["skipped_corrupt"] == {}
    assert records[0]["lr"] == pytest.approx(1e-3 / 10) and records[-1]["lr"] == 1e-3
    saved = yaml.safe_load((reference / "ckpt" / f"step-{STEPS:07d}" / "config.yaml").read_text())
    assert set(saved) == {"train", "model", "data"} and saved["train"]["max_steps"] == STEPS


def test_sigkill_then_resume_reproduces_the_losses(
    tmp_path: Path, shards: Path, reference: Path
) -> None:
    config, out = _config(tmp_path, "tiny"), tmp_path / "run"
    proc = subprocess.Popen(
        _cli("--config", config, "--data", shards, "--out", out, "--max-steps", STEPS),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:  # kill it hard once it is past its first checkpoint (step 4)
        deadline = time.monotonic() + 120
        while not _logged_past(out, 5) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = max(r["step"] for r in read_metrics(out))
    assert killed_at < STEPS

    cfg = TrainConfig.from_yaml(config, max_steps=STEPS)
    assert train(cfg, [shards], out, resume=True) == STEPS
    resumed, uninterrupted = read_metrics(out), read_metrics(reference)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, uninterrupted, strict=True):
        for key in ("ce", "mse", "lr", "grad_norm"):
            assert a[key] == b[key], f"step {a['step']} {key}: {a[key]} != {b[key]}"


def _logged_past(out: Path, step: int) -> bool:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return False
    lines = path.read_text().splitlines()
    return len(lines) >= step


def test_sigterm_saves_and_exits_cleanly(tmp_path: Path, shards: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cli("--config", _config(tmp_path, "tiny"), "--data", shards, "--out", out),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _logged_past(out, 1) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    last = max(r["step"] for r in read_metrics(out))
    assert (out / "ckpt" / f"step-{last:07d}" / "COMPLETE").is_file()
    assert "stop requested" in output


def test_two_ranks_take_the_same_step_as_one_rank_accumulating(
    tmp_path: Path, shards: Path
) -> None:
    """2 ranks x 1 pack (FSDP over gloo) vs 1 rank x 2 packs: the same packs, the same noise."""
    steps = 2
    optim = {"lr": 1e-4, "warmup_steps": 1}
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + _cli("--config", _config(tmp_path, "two", optim=optim), "--data", shards, "--out", two)[
            1:
        ]
        + ["--max-steps", str(steps)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    one = tmp_path / "one"
    cfg = TrainConfig.from_yaml(
        _config(tmp_path, "one", optim=optim, grad_accum=2), max_steps=steps
    )
    train(cfg, [shards], one)

    for a, b in zip(read_metrics(one), read_metrics(two), strict=True):
        assert a["tokens"] == b["tokens"]  # the same packs
        for key in ("ce", "mse", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)

    from train.export import load_checkpoint_model

    w1 = load_checkpoint_model(one / "ckpt" / f"step-{steps:07d}").state_dict()
    w2 = load_checkpoint_model(two / "ckpt" / f"step-{steps:07d}").state_dict()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    # Reduction order differs (local accumulation vs reduce-scatter): float32 rounding only.
    assert worst < 1e-6, worst


def test_export_to_bagel_layout_and_reimport_is_exact(tmp_path: Path, reference: Path) -> None:
    from train.export import load_checkpoint_model
    from train.model import ChatUMM
    from train.model.bagel_adapter import load_bagel_checkpoint

    out = tmp_path / "bagel"
    result = subprocess.run(
        _cli("export", reference, out), env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert {"ema.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json"} <= {
        p.name for p in out.iterdir()
    }
    trained = load_checkpoint_model(reference / "ckpt" / f"step-{STEPS:07d}")
    reimported = ChatUMM(trained.config)
    load_bagel_checkpoint(reimported, out)
    expected, got = trained.state_dict(), reimported.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
