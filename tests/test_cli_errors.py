"""Every ``synth`` command answers a user's mistake with one line naming the path, row or field
and the fix, and exit code 2: no traceback. A broken dataset is a result (exit 1), not an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth.cli import app
from tests.fakes.dialogues import build, write_dir

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, (args, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert "Traceback" not in result.output
    return lines[0]


def test_run_with_a_typo_in_sources(tmp_path: Path) -> None:
    line = one_line_error(
        ["run", "stage-a", "--sources", str(tmp_path / "sorces.yaml"), "--out", str(tmp_path)]
    )
    assert "--sources" in line and "sorces.yaml: no such file" in line
    assert "examples/sources.yaml" in line  # the fix
    line = one_line_error(["run", "stage-a", "--sources", str(EXAMPLES), "--out", str(tmp_path)])
    assert "not a file" in line


def test_run_with_a_missing_in_directory(tmp_path: Path) -> None:
    missing = tmp_path / "stage-a"
    for stage in ("stage-b", "stage-c"):
        line = one_line_error(["run", stage, "--in", str(missing), "--out", str(tmp_path / "x")])
        assert f"--in {missing}: no such directory" in line and "earlier stage" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(["run", "stage-c", "--in", str(empty), "--out", str(tmp_path / "y")])
    assert "no chatumm shards" in line


def test_run_with_a_bad_option_value_or_config(tmp_path: Path) -> None:
    sources = str(EXAMPLES / "sources.yaml")
    line = one_line_error(
        ["run", "stage-a", "--sources", sources, "--concurrency", "0", "--out", str(tmp_path)]
    )
    assert "concurrency" in line
    config = tmp_path / "run.yaml"
    config.write_text("concurency: 8\n")
    line = one_line_error(["run", "stage-a", "--config", str(config)])
    assert "concurency: unknown key" in line


def test_sources_file_that_is_missing_or_malformed(tmp_path: Path) -> None:
    line = one_line_error(["sources", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    one_line_error(["sources", str(bad)])


@pytest.mark.parametrize("command", ["validate", "stats", "inspect"])
def test_reading_commands_on_a_missing_directory(command: str, tmp_path: Path) -> None:
    line = one_line_error([command, str(tmp_path / "out")])
    assert f"{tmp_path / 'out'}: no such directory" in line


def test_push_on_a_missing_directory(tmp_path: Path) -> None:
    one_line_error(["push", str(tmp_path / "out"), "--repo-id", "alice/x", "--dry-run"])


def test_validate_fails_on_a_repeated_sample_id(tmp_path: Path) -> None:
    sample = build("t_i_0_0", 0)
    out = write_dir(tmp_path / "dup", [sample, build("t_i_0_0", 1), sample], [])
    result = CliRunner().invoke(app, ["validate", str(out)])
    assert result.exit_code == 1, result.output
    assert f"BROKEN sample_id {sample.sample_id} repeats: rows 0 and 2" in result.output
    assert "3 samples checked, 1 broken" in result.output
    clean = write_dir(tmp_path / "clean", [build("t_i_0_0", 0), build("t_i_0_0", 1)], [])
    assert CliRunner().invoke(app, ["validate", str(clean)]).exit_code == 0


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """Through the console entry point, as a shell runs it: stderr is the one line."""
    done = subprocess.run(
        [sys.executable, "-m", "synth", "validate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: shard directory {tmp_path / 'missing'}: no such directory; give the --out "
        "directory of a `synth run` stage"
    ]
