"""`python -m train chat` and `python -m train generate`, end to end, as a user runs them: on a
checkpoint that `torchrun -m train` wrote on the bundled data (synthesized through stage c), on
its BAGEL-layout export, and on a single Parquet file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from synth.contract import arrow_schema
from synth.shards import iter_samples

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "3", "--max-tokens", "4"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(
    *args: str | Path, stdin: str | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "train", *map(str, args)],
        env=_env(), input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def run_dir(tiny_run_dir: Path) -> Path:
    """Two steps of the tiny recipe under torchrun on the bundled stage-c shards."""
    return tiny_run_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_writes_each_samples_answer_reproducibly_and_resumes(
    run_dir: Path, bundled_run, tmp_path: Path
) -> None:
    data = bundled_run.stage_c
    out = tmp_path / "gen"
    result = _run(
        "generate", "--checkpoint", run_dir, "--in", data, "--out", out, "--limit", "3", *FAST
    )
    records = _lines(out / "turns.jsonl")
    samples = {s.sample_id: s for s in iter_samples(data)}
    assert len(records) == 3 and "wrote 3 turn(s)" in result.stdout
    for record in records:
        assert (
            record["sample_id"] in samples and record["task"] == samples[record["sample_id"]].task
        )
        assert record["parts"], record
        for part in record["parts"]:
            if part["type"] == "image":
                with Image.open(out / part["path"]) as image:
                    assert image.size == (64, 64) or min(image.size) >= 16
            else:
                assert isinstance(part["text"], str)
    assert any(p["type"] == "image" for r in records for p in r["parts"])

    # a rerun skips the samples done; a torn last line (a kill mid-write) is cut off and that
    # sample written again, the same
    text = (out / "turns.jsonl").read_text()
    (out / "turns.jsonl").write_text(text[: len(text) - 20])
    again = _run(
        "generate", "--checkpoint", run_dir, "--in", data, "--out", out, "--limit", "3", *FAST
    )  # fmt: skip
    assert "wrote 1 turn(s)" in again.stdout and "2 already there" in again.stdout
    assert _lines(out / "turns.jsonl") == records


def test_generate_from_an_export_and_a_parquet_file_with_a_bad_row(
    run_dir: Path, bundled_run, tmp_path: Path
) -> None:
    exported = tmp_path / "bagel"
    _run("export", run_dir, exported)
    good = next(iter(iter_samples(bundled_run.stage_c)))
    bad = good.to_row() | {"sample_id": "broken", "task": "t_i_0_0"}  # not the turns' task
    table = pa.Table.from_pylist([bad, good.to_row()], schema=arrow_schema())
    shard = tmp_path / "two.parquet"
    pq.write_table(table, shard)
    out = tmp_path / "gen"
    _run(
        "generate", "--checkpoint", exported, "--in", shard, "--out", out, "--mode", "image", *FAST
    )
    (record,) = _lines(out / "turns.jsonl")
    assert record["sample_id"] == good.sample_id and record["parts"][0]["type"] == "image"
    (reject,) = _lines(out / "rejects.jsonl")
    assert reject["row"] == 0 and reject["sample_id"] == "broken" and "[stage]" in reject["reason"]


def test_chat_talks_draws_and_reads_an_uploaded_image(run_dir: Path, tmp_path: Path) -> None:
    upload = tmp_path / "photo.png"
    Image.linear_gradient("L").convert("RGB").resize((40, 30)).save(upload)
    script = "\n".join(
        ["/help", "a red fox in the snow", "/draw now at night", f"/image {upload}",
         "/talk what is in this photo?", "/image missing.png", "/reset", "/talk hello"]
    )  # fmt: skip
    out = tmp_path / "chat"
    result = _run("chat", "--checkpoint", run_dir, "--out", out, *FAST, stdin=script + "\n")
    lines = result.stdout.splitlines()
    images = [line.rsplit(" ", 1)[1] for line in lines if "assistant> [image]" in line]
    assert images and all(Path(p).is_file() for p in images)
    assert any(line.startswith("you> assistant> ") and "[image]" not in line for line in lines)
    assert "/draw MESSAGE" in result.stdout and "no such image file" in result.stdout
    assert "(attached 1 image(s)" in result.stdout and "(new conversation)" in result.stdout
