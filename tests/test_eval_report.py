"""The evaluation report: bootstrap intervals, and the JSON, markdown and PNG written from a real
probe run of a tiny model on the bundled dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.bundled import BundledRun
from tests.eval_support import one_torch_thread, random_model, tiny_setup  # noqa: F401
from train.eval.config import EvalConfig
from train.eval.render import markdown, write_report
from train.eval.report import bootstrap
from train.eval.run import Evaluator, flat_metrics, summary_line

TASKS = ("t_i_0_0", "t_i_i1_n", "t_ti_t1_1", "ti_i_i1_n")


@pytest.fixture(scope="module")
def report(bundled_run: BundledRun) -> dict[str, Any]:
    setup = tiny_setup()
    evaluator = Evaluator(
        EvalConfig(tasks=TASKS, max_per_task=2, timesteps=(0.5,), bootstrap=300),
        [bundled_run.stage_a, bundled_run.stage_b, bundled_run.stage_c],
        holdout=None,
        data_cfg=setup.data_cfg,
        model_cfg=setup.model_cfg,
        tokenizer=setup.tokenizer,
        attention="sdpa",
        device=torch.device("cpu"),
    )
    found = evaluator.run(random_model(setup.model_cfg), "tiny-random", step=0)
    assert found is not None
    return found


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(0).normal(0.5, 1.0, size=200).tolist()
    a = bootstrap(values, 2000, seed=1)
    assert a == bootstrap(values, 2000, seed=1)
    assert a["n"] == 200 and a["lo"] < a["mean"] < a["hi"]
    assert a["mean"] == pytest.approx(float(np.mean(values)))
    # about 1.96 standard errors each side for a normal sample
    half = 1.96 * float(np.std(values)) / np.sqrt(200)
    assert a["hi"] - a["lo"] == pytest.approx(2 * half, rel=0.15)
    assert bootstrap([0.25], 100, seed=0) == {"mean": 0.25, "lo": 0.25, "hi": 0.25, "n": 1}
    assert bootstrap([], 100, seed=0)["n"] == 0


def test_report_holds_every_group_and_dialogue(report: dict[str, Any]) -> None:
    assert list(report["by_task"]) == sorted(TASKS)
    assert set(report["by_depth"]) == {"0", "1", "n"}
    assert report["all"]["dialogues"] == len(report["dialogues"]) == 2 * len(TASKS)
    assert report["tokens"] > 0 and report["tokens_per_s"] > 0 and report["ranks"] == 1
    # depth 0: nothing to replace or drop; the others have both gains
    assert report["by_task"]["t_i_0_0"]["gain"]["mse_replaced"]["n"] == 0
    for task in ("t_i_i1_n", "t_ti_t1_1", "ti_i_i1_n"):
        for gain in report["by_task"][task]["gain"].values():
            assert gain["n"] == 2 and gain["lo"] <= gain["mean"] <= gain["hi"]
    n_rounds = {r["distractors"] for r in report["dialogues"]}
    assert set(report["by_distractors"]) == {str(n) for n in n_rounds} and len(n_rounds) > 1
    intent = report["by_task"]["t_ti_t1_1"]["intent"]["true"]
    assert intent["modality_decisions"] == 2 and intent["end_decisions"] == 4  # image, text, stop
    assert 0 <= intent["end"] <= 1


def test_json_markdown_and_png_are_written(report: dict[str, Any], tmp_path: Path) -> None:
    written = write_report(report, tmp_path / "out")
    assert [p.name for p in written] == ["report.json", "report.md", "report.png"]

    def no_nan(token: str) -> None:
        raise AssertionError(f"report.json holds {token}: not valid JSON")

    data = json.loads((tmp_path / "out/report.json").read_text(), parse_constant=no_nan)
    assert data["by_task"]["t_i_0_0"]["gain"]["ce_none"]["mean"] is None
    assert data["dialogues"][0]["sample_id"] == report["dialogues"][0]["sample_id"]
    md = (tmp_path / "out/report.md").read_text()
    assert md == markdown(report)
    for task in TASKS:
        assert sum(line.startswith(f"| {task} |") for line in md.splitlines()) == 1
    assert "## Per depth" in md and "## Per distractor rounds" in md
    png = (tmp_path / "out/report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_headline_numbers_for_logs(report: dict[str, Any]) -> None:
    flat = flat_metrics(report)
    assert flat["dialogues"] == 2 * len(TASKS)
    assert flat["gain_mse_replaced"] == report["all"]["gain"]["mse_replaced"]["mean"]
    assert "depth_n/gain_ce_none_lo" in flat and "task/ti_i_i1_n/intent_end" in flat
    assert "task/t_i_0_0/gain_ce_replaced" not in flat  # no such gain for depth 0
    line = summary_line(report)
    assert line.startswith(f"{2 * len(TASKS)} dialogues: ΔMSE replaced ") and "tok/s" in line
