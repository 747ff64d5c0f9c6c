"""`synth stats` on shard directories whose every number is known from how they were built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from synth.cli import app
from synth.lang import detect_language
from synth.shards import sample_files
from synth.stats import SAMPLE_COLUMNS, DatasetStats, compute_stats, physical_columns
from synth.stats_view import plot_stats
from tests.fakes.dialogues import stage_a, stage_b, stage_c


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    return [stage_a(root / "stage-a"), stage_b(root / "stage-b"), stage_c(root / "stage-c")]


def test_stage_a_numbers(dirs: list[Path]) -> None:
    s = compute_stats(dirs[:1])
    assert s.samples == 8 and s.stages == {"a": 8}
    assert s.tasks == {"t_i_0_0": 4, "ti_i_0_0": 2, "t_i_t1_1": 1, "t_i_i1_1": 1}
    assert s.depth == {"0": 6, "1": 2}
    assert s.distance == {"0": 6, "1": 2}
    assert s.distractors == {"0": 8}
    assert s.rounds == {"1": 6, "2": 2}
    # 3 en + 1 zh written by caption2query; the edit instructions and "Create one for me."
    # came from sources/templates without a call and are detected: en, zh, en, en
    assert s.languages == {"en": 6, "zh": 2}
    assert s.language_origin == {"llm": 4, "detected": 4}
    assert s.images == 11 and s.image_sources == {"laion-pop": 9, "chelsea": 2}
    assert s.rejects == 3 and s.reject_reasons == {"parse:wrong-count": 2, "llm:truncated": 1}
    assert s.reject_stages == {"a": 3}
    assert s.llm_calls == 6
    assert s.backends == {"openai/gpt-4o-mini": 5, "gemini/gemini-2.5-flash": 1}
    assert sum(s.templates.values()) == 6
    assert {t.split("@")[0] for t in s.templates} == {"caption2query", "caption2QA_q"}
    assert (s.prompt_tokens, s.completion_tokens) == (720, 180)
    # the engine's own record, from the manifest: every paid request, not only kept samples'
    assert s.engine == {"requests": 11, "cache_hits": 2, "errors": 1, "prompt_tokens": 1000,
                        "completion_tokens": 250, "thinking_tokens": 0,
                        "cost_usd": 0.125}  # fmt: skip
    assert s.engine_by_stage == {"a": s.engine}
    assert s.engine_by_operation["caption2query"]["requests"] == 9
    assert s.template_calls == 0
    assert s.incomplete == []


def test_stage_b_distractors_and_merge(dirs: list[Path]) -> None:
    b = compute_stats(dirs[1:2])
    assert b.tasks == {"t_i_i1_n": 3} and b.depth == {"n": 3}
    assert b.distractors == {"1": 1, "2": 1, "3": 1}
    assert b.distance == {"2": 1, "3": 1, "4": 1}
    assert b.reject_reasons == {"invariant:task-structure": 1}
    assert b.distractor_kinds == {"t2i": 6}  # 1 + 2 + 3 generated-image rounds
    total = compute_stats(dirs)
    assert total.samples == 15 and total.stages == {"a": 8, "b": 3, "c": 4}
    assert total.languages == {"en": 12, "zh": 3}
    assert total.rejects == 4
    assert total.engine["cost_usd"] == 0.125 and total.engine_by_stage == {"a": total.engine}
    assert DatasetStats.from_json(json.loads(json.dumps(total.to_json()))) == total


def test_images_and_raw_texts_are_never_read(dirs: list[Path]) -> None:
    columns = physical_columns(sample_files(dirs[0])[0], SAMPLE_COLUMNS)
    assert columns and not any(
        c.startswith("images") and not c.endswith(".source") for c in columns
    )
    assert not any(c.endswith((".prompt", ".response")) or ".results." in c for c in columns)


def test_detect_language() -> None:
    assert detect_language("Paint a red fox in the snow.") == "en"
    assert detect_language("画一只站在新雪中的红狐狸。") == "zh"
    assert detect_language("画一只在Paris埃菲尔铁塔前的猫") == "zh"
    assert detect_language("A white cat named 小白 on a sofa") == "en"
    assert detect_language("1234 ...") == "unknown"


def test_cli_json_tables_and_plot(dirs: list[Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["stats", *map(str, dirs), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == compute_stats(dirs).to_json()

    png = tmp_path / "charts" / "stats.png"
    result = runner.invoke(app, ["stats", str(dirs[0]), "--plot", str(png)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for expected in ("t_i_0_0", "parse:wrong-count", "openai/gpt-4o-mini", "0.1250", "zh"):
        assert expected in result.stdout
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == (1300, 900)


def test_errors_are_clear(
    dirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert result.exit_code == 2 and "no chatumm shards" in result.output
    result = CliRunner().invoke(app, ["stats", str(dirs[0]), "--plot", str(tmp_path / "x.jpg")])
    assert result.exit_code == 2 and "ending in .png" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the viz extra were missing
    with pytest.raises(ValueError, match=r"chatumm\[viz\]"):
        plot_stats(compute_stats(dirs[:1]), tmp_path / "x.png")
