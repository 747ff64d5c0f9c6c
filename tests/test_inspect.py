"""`synth inspect` prints dialogues readably, from real shards."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from synth.cli import app
from synth.inspection import Selection, find_samples, render_sample
from synth.shards import iter_samples
from tests.fakes.dialogues import stage_a, stage_b, stage_c

WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    return [stage_a(root / "stage-a"), stage_b(root / "stage-b"), stage_c(root / "stage-c")]


def inspect(*args: str) -> str:
    result = CliRunner().invoke(app, ["inspect", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_distractors_dependencies_images_and_provenance(dirs: list[Path]) -> None:
    out = inspect(str(dirs[1]), "--limit", "1", "--provenance")
    first = next(iter_samples(dirs[1]))
    assert first.sample_id in out and "t_i_i1_n · stage b" in out
    assert "#1 assistant  ◆ dependency" in out
    assert "#2 user  distractor" in out and "#3 assistant  distractor" in out
    assert "#4 user  ▶ final query" in out and "#5 assistant  ▶ answer" in out
    assert re.search(r"\[image 0: output, 64x48 PNG, \d+ B, source laion-pop row 20-0\]", out)
    version = first.provenance.llm_calls[2].template_version
    assert f"↳ call 2: query2dep_q · gemini/gemini-2.5-flash · template {version}, en" in out
    assert "LLM calls" in out and "120+30 tokens" in out
    assert "prompt:" not in out, "raw prompts only with --raw"
    assert "[query2dep_q] rewrite for seed 20" in inspect(str(dirs[1]), "-n", "1", "-p", "--raw")
    assert "↳" not in inspect(str(dirs[1]), "-n", "1"), "provenance only on demand"


def test_select_by_task_and_id(dirs: list[Path]) -> None:
    out = inspect(str(dirs[0]), "--task", "ti_i_0_0", "--limit", "10")
    assert out.count("ti_i_0_0 · stage a") == 2 and "t_i_0_0 ·" not in out
    assert re.search(r"\[image 0: upload, 512x384 JPEG, \d+ KB, source chelsea row 4-0\]", out)
    assert "把猫变成橙色" in out
    wanted = list(iter_samples(dirs[0]))[6]
    out = inspect(str(dirs[0]), "--id", wanted.sample_id)
    assert out.count("╭─") == 1 and wanted.sample_id in out and "t_i_t1_1" in out
    assert "#0 user  ◆ dependency" in out and "#1 assistant  ◆ dependency" in out
    result = CliRunner().invoke(app, ["inspect", str(dirs[0]), "--task", "t_i_in_1"])
    assert result.exit_code == 1 and "no sample matches task t_i_in_1" in result.output


def test_text_after_the_image_in_stage_c(dirs: list[Path]) -> None:
    out = inspect(str(dirs[2]), "--limit", "1")
    answer = out.split("▶ answer")[1]
    image_at = answer.index("[image 0: output, 96x64 PNG")
    assert image_at < answer.index("Red foxes live across the Northern Hemisphere.")
    final = out.split("▶ final query")[1].split("▶ answer")[0]
    assert "Paint a red fox" in final and "Also, where do red foxes live?" in final


def test_distractor_turns_are_dimmed(dirs: list[Path]) -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=200)
    render_sample(next(iter_samples(dirs[1])), console)
    lines = buf.getvalue().splitlines()
    distractor = next(line for line in lines if "Show me a lighthouse" in line)
    final = next(line for line in lines if "Go back to the first picture" in line)
    assert "\x1b[2m" in distractor and "\x1b[2m" not in final


def test_only_matching_row_groups_are_read_whole(
    dirs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    full_reads: list[int] = []
    original = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, i: int, columns: list[str] | None = None, **kw: object):
        if columns is None:
            full_reads.append(i)
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    found = list(find_samples(dirs[0], Selection(task="t_i_i1_1", limit=None)))
    assert [s.task for s in found] == ["t_i_i1_1"]
    assert len(full_reads) == 1, "7 other samples in 3 other row groups were never decoded"
