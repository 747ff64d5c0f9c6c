"""The run config: YAML file < command line, unknown keys are errors, values are checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synth.stages.config import load_run_config


def test_command_line_overrides_the_file_and_dashed_keys_work(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("seed: 5\nnum-shards: 4\nshard_index: 3\nout: data/a\nmix: {t_i_0_0: 2}\n")
    cfg = load_run_config("a", config, {"seed": 9, "concurrency": None})
    assert (cfg.seed, cfg.num_shards, cfg.shard_index, cfg.concurrency) == (9, 4, 3, 64)
    assert cfg.out == tmp_path / "data" / "a"  # relative to the file, like the sources file
    assert cfg.task_weights["t_i_0_0"] == 2 and cfg.task_weights["t_i_t1_1"] == 0
    assert load_run_config("a", None, {}).task_weights == dict.fromkeys(cfg.task_weights, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sead: 3\n", "sead: unknown key; known keys: api_key_env"),
        ("shard_index: 2\nnum_shards: 2\n", "shard_index 2 is not below num_shards 2"),
        ("mix: {t_i_i1_n: 1}\n", "stage-a tasks are"),
        ("mix: {t_i_0_0: 0}\n", "no positive weight"),
        ("distractors: [3, 1]\n", "need 1 <= min <= max"),
        ("llm: gpt\n", "llm"),
        ("stage: b\n", "comes from the command"),
        ("- 1\n", "must be a mapping"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_run_config("a", config, {})


def test_the_command_reports_config_errors_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synth", "run", "stage-b", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "stage b reads --in DIR" in done.stderr and "Traceback" not in done.stderr


def test_secrets_never_reach_the_manifest() -> None:
    cfg = load_run_config("a", None, {"base_url": "https://user:sk-secret@api.example.com:8443/v1"})
    assert cfg.public()["base_url"] == "https://api.example.com:8443/v1"
