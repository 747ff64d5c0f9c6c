from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from synth.contract import DialogueSample, Reject
from synth.shards import (
    ShardConfig,
    ShardWriter,
    iter_rejects,
    iter_samples,
    read_manifest,
    reject_files,
    sample_files,
)
from taxonomy import TASKS
from tests.builders import build_sample

ROOT = Path(__file__).resolve().parents[1]


def _samples(n: int) -> list[DialogueSample]:
    tasks = sorted(TASKS)
    return [build_sample(tasks[i % len(tasks)], seed=i) for i in range(n)]


def test_python_to_parquet_to_datasets_and_back_is_byte_identical(tmp_path):
    samples = _samples(25)
    with ShardWriter(
        tmp_path, config={"seed": 1}, shard=ShardConfig(max_rows=10, row_group_rows=4)
    ) as w:
        for i, s in enumerate(samples):
            w.add(s)
            w.mark(i + 1)
        w.add_reject(Reject(stage="a", reason="parse:wrong-count", detail="5 results, expected 6"))
    assert [p.name for p in sample_files(tmp_path)] == [
        "train-00000-00000.parquet",
        "train-00000-00001.parquet",
        "train-00000-00002.parquet",
    ]
    assert pq.ParquetFile(sample_files(tmp_path)[0]).metadata.num_row_groups == 3
    group = pq.ParquetFile(sample_files(tmp_path)[0]).metadata.row_group(0)
    encodings = {
        group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)
    }
    assert "RLE_DICTIONARY" in encodings["task"]  # repeats: worth a dictionary
    assert "RLE_DICTIONARY" in encodings["turns.list.element.role"]
    assert "RLE_DICTIONARY" not in encodings["provenance.llm_calls.list.element.prompt"]
    assert "RLE_DICTIONARY" not in encodings["images.list.element.image.bytes"]

    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path), split="train")
    assert len(ds) == 25  # the rejects files are not part of the samples split
    assert isinstance(ds.features["images"].feature["image"], datasets.Image)
    first = ds[0]["images"][0]["image"]
    assert first.size == (24, 16)  # decoded to a PIL image, as viewers show it

    raw = ds.cast_column(
        "images",
        datasets.List(
            {
                **{k: v for k, v in ds.features["images"].feature.items()},
                "image": datasets.Image(decode=False),
            }
        ),
    )
    back = [DialogueSample.from_row(row) for row in raw]
    assert back == samples
    for got, want in zip(back, samples, strict=True):
        assert [i.data for i in got.images] == [i.data for i in want.images]

    assert list(iter_samples(tmp_path)) == samples
    assert [r.reason for r in iter_rejects(tmp_path)] == ["parse:wrong-count"]
    manifest = read_manifest(tmp_path)
    assert manifest.complete and manifest.samples == 25 and manifest.cursor == 25
    assert sum(manifest.task_counts.values()) == 25
    assert manifest.reject_counts == {"parse:wrong-count": 1}
    assert manifest.config == {"seed": 1} and "pyarrow" in manifest.versions


def test_rotation_by_bytes(tmp_path):
    with ShardWriter(tmp_path, shard=ShardConfig(max_rows=1000, max_bytes=3000)) as w:
        for i, s in enumerate(_samples(6)):
            w.add(s)
            w.mark(i + 1)
    assert len(sample_files(tmp_path)) > 1
    assert read_manifest(tmp_path).samples == 6


def test_commit_due_says_which_mark_commits(tmp_path):
    # A caller refreshes what the manifest keeps (the run's usage) only when a mark will commit.
    w = ShardWriter(tmp_path, shard=ShardConfig(max_rows=3))
    due = []
    for i, s in enumerate(_samples(7)):
        w.add(s)
        due.append(w.commit_due)
        if w.commit_due:
            w.manifest.summary = {"marked": i + 1}
        w.mark(i + 1)
    assert due == [False, False, True, False, False, True, False]
    assert read_manifest(tmp_path).cursor == 6
    assert read_manifest(tmp_path).summary == {"marked": 6}
    w.close()


def test_resume_continues_after_the_cursor(tmp_path):
    samples = _samples(12)
    w = ShardWriter(tmp_path, shard=ShardConfig(max_rows=5))
    for i, s in enumerate(samples[:8]):
        w.add(s)
        w.mark(i + 1)
    w.abort()  # like a crash: rows 5..7 were never committed
    w = ShardWriter(tmp_path, shard=ShardConfig(max_rows=5))
    assert w.cursor == 5
    for i, s in enumerate(samples[w.cursor :], start=w.cursor):
        w.add(s)
        w.mark(i + 1)
    w.close()
    assert [s.sample_id for s in iter_samples(tmp_path)] == [s.sample_id for s in samples]


def test_num_parts_mismatch_is_refused(tmp_path):
    ShardWriter(tmp_path, part=1, num_parts=3).close()
    with pytest.raises(ValueError, match="same --num-shards"):
        ShardWriter(tmp_path, part=1, num_parts=2)


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from synth.contract import Reject
    from synth.shards import ShardConfig, ShardWriter
    from taxonomy import TASKS
    from tests.builders import build_sample
    tasks = sorted(TASKS)
    w = ShardWriter({out!r}, shard=ShardConfig(max_rows=7, row_group_rows=3))
    for i in range(w.cursor, {n}):
        if i % 5 == 4:
            w.add_reject(Reject(stage="a", reason="test:every-fifth", detail=str(i), source_row=str(i)))
        else:
            w.add(build_sample(tasks[i % len(tasks)], seed=i))
        w.mark(i + 1)
        print(i, flush=True)
    w.close()
    """
)


def _check_consistent(out: Path) -> None:
    assert not [
        p
        for p in out.iterdir()
        if p.name.endswith(".parquet")
        and p.name.startswith(("train", "rejects"))
        and not pq.ParquetFile(p).metadata.num_rows
    ]
    manifest = read_manifest(out)
    files = sample_files(out)
    assert [e.file for e in manifest.shards] == [p.name for p in files]
    assert manifest.samples == sum(pq.read_metadata(p).num_rows for p in files)
    assert sum(len(list(pq.ParquetFile(p).iter_batches())) > 0 for p in files) == len(files)
    assert len(list(iter_samples(out))) == manifest.samples  # every visible shard reads fully
    assert [e.file for e in manifest.rejects] == [p.name for p in reject_files(out)]


def test_sigkill_mid_shard_leaves_only_complete_shards_and_a_matching_manifest(tmp_path):
    out, n = tmp_path / "out", 120
    script = WRITER.format(root=str(ROOT), out=str(out), n=n)
    for kill_after in (17, 40, 41, 88):  # inputs handed to the writer before the kill: mid-shard
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line) + 1 >= kill_after:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _check_consistent(out)
        manifest = read_manifest(out)
        assert not manifest.complete and manifest.cursor <= kill_after
    subprocess.run([sys.executable, "-c", script], check=True)
    _check_consistent(out)
    ids = [s.sample_id for s in iter_samples(out)]
    tasks = sorted(TASKS)
    want = [build_sample(tasks[i % len(tasks)], seed=i).sample_id for i in range(n) if i % 5 != 4]
    assert ids == want  # nothing lost, nothing duplicated, in order
    assert sorted(int(r.source_row) for r in iter_rejects(out)) == [
        i for i in range(n) if i % 5 == 4
    ]
    assert read_manifest(out).complete
    assert not list(out.glob(".tmp-*"))


def test_the_arrow_schema_is_what_datasets_derives_from_the_features():
    from synth.schema import arrow_schema, dataset_features

    ours, theirs = arrow_schema(), dataset_features().arrow_schema
    assert ours.remove_metadata() == theirs.remove_metadata()
    meta = lambda s: json.loads(s.metadata[b"huggingface"])["info"]["features"]  # noqa: E731
    assert meta(ours) == meta(theirs)


def test_writing_a_shard_does_not_import_datasets(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from synth.shards import ShardWriter\nfrom tests.builders import build_sample\n"
        f"with ShardWriter({str(tmp_path)!r}) as w:\n    w.add(build_sample('t_i_0_0')); w.mark(1)\n"
        "assert 'datasets' not in sys.modules, 'datasets was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
