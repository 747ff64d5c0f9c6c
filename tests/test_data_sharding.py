"""The one sharding rule on directories with fewer row groups than readers: rows strided inside a
row group, every row once per epoch, exact resume after a SIGKILL, and a clear error when there
are fewer rows than readers."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from data_builders import TINY, TOKENIZER, random_samples, sample, write_shards

from train.batch import PackedBatch
from train.data import PackedLoader
from train.data.sampling import epoch_units, parts_per_group, row_order, stride
from train.data.source import Source

ROOT = Path(__file__).resolve().parents[1]
ROWS = 65  # the README's stage-a output: 65 samples, one row group
RANKS, WORKERS = 2, 2
# Packs of ~2 dialogues, so a reader's overflow buffer holds rows at any pause.
CFG = TINY.model_copy(
    update={"num_workers": WORKERS, "seed": 5, "pack_tokens": 300, "max_dialogue_tokens": 300}
)


@pytest.fixture(scope="module")
def one_group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one_group")
    write_shards(out, random_samples(ROWS, seed=4), row_group_rows=256, max_rows=1000)
    assert Source.open(out).rows_per_group == ((ROWS,),)
    return out


def digest(batch: PackedBatch) -> str:
    """Every field of a pack, hashed: equal digests are equal packs."""
    h = hashlib.sha256()
    for f in fields(PackedBatch):
        value = getattr(batch, f.name)
        tensors = value if f.name == "vae_images" else [value]
        if all(isinstance(t, torch.Tensor) for t in tensors):
            for t in tensors:
                h.update(repr((t.dtype, tuple(t.shape))).encode() + t.numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def loaders(directory: Path, cfg=CFG) -> list[PackedLoader]:
    return [PackedLoader(directory, cfg, TOKENIZER, r, RANKS) for r in range(RANKS)]


@pytest.mark.parametrize(
    ("sizes", "readers"),
    [
        ([65], 4),
        ([65], 65),
        ([256, 256, 232], 8),
        ([10, 1], 4),  # a group smaller than its share of parts
        ([3, 0, 5, 1], 7),  # an empty row group holds no unit
        ([4] * 12, 4),
        ([4] * 12, 5),
        ([1] * 9, 9),
    ],
)
def test_units_cover_every_row_once_and_feed_every_reader(sizes: list[int], readers: int) -> None:
    groups = [(0, g, n) for g, n in enumerate(sizes)]
    k = parts_per_group(sizes, readers)
    for epoch in range(3):
        units = epoch_units(groups, k, seed=1, epoch=epoch, shuffle=True)
        per_reader = [stride(units, r, readers) for r in range(readers)]
        rows = [
            (u.group, row)
            for mine in per_reader
            for u in mine
            for row in row_order(u, seed=1, epoch=epoch, shuffle=True)
        ]
        assert sorted(rows) == [(g, r) for g, n in enumerate(sizes) for r in range(n)]
        assert all(mine for mine in per_reader), "a reader got nothing"
        assert k == 1 or len(units) < 2 * readers  # a reader reads at most two row groups
    if sum(n > 0 for n in sizes) >= readers:  # enough row groups: row_groups[r::R], unchanged
        assert k == 1
        units = epoch_units(groups, k, seed=1, epoch=0, shuffle=False)
        assert [(u.group, u.part, u.parts) for u in units] == [(g, 0, 1) for _, g, n in groups if n]


def test_two_ranks_two_workers_read_every_row_once_per_epoch(one_group: Path) -> None:
    ids = sorted(s.sample_id for s in random_samples(ROWS, seed=4))
    for epochs in (1, 2):
        seen: Counter[str] = Counter()
        for loader in loaders(one_group, CFG.model_copy(update={"epochs": epochs})):
            seen.update(sid for batch in loader for sid in batch.sample_ids)
            per_reader = [s["stats"]["rows_read"] for s in loader.state_dict()["readers"]]
            assert all(n >= epochs * (ROWS // (RANKS * WORKERS)) for n in per_reader), per_reader
        assert sorted(seen) == ids and set(seen.values()) == {epochs}


_CHILD = """
import json, os, sys
sys.path[:0] = [{tests!r}, {root!r}]
from test_data_sharding import CFG, RANKS, digest, loaders
from pathlib import Path

out = Path({out!r})
streams = [(loader, iter(loader)) for loader in loaders(Path({data!r}))]
consumed = [[] for _ in streams]
for step in range({steps}):
    for (loader, stream), mine in zip(streams, consumed):
        mine.append(digest(next(stream)))
    saved = {{"packs": consumed, "states": [loader.state_dict() for loader, _ in streams]}}
    (out / "tmp.json").write_text(json.dumps(saved))
    os.replace(out / "tmp.json", out / "saved.json")  # what a checkpoint holds, atomically
"""


def test_resume_after_sigkill_continues_the_same_sequence(one_group: Path, tmp_path: Path) -> None:
    steps = 24  # ~2 epochs of each reader's ~16 rows at ~2 dialogues a pack
    whole = [[digest(b) for b in itertools.islice(loader, steps)] for loader in loaders(one_group)]
    child = _CHILD.format(
        tests=str(ROOT / "tests"),
        root=str(ROOT),
        out=str(tmp_path),
        data=str(one_group),
        steps=steps,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(child)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its DataLoader workers die with it
    )
    saved = tmp_path / "saved.json"
    try:  # kill it hard once it has consumed some packs of its first epoch
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if saved.exists() and len(json.loads(saved.read_text())["packs"][0]) >= 5:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the child ended before it was killed: {proc.stderr.read()}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    state = json.loads(saved.read_text())
    head = state["packs"]
    assert 5 <= len(head[0]) < steps

    for rank, loader in enumerate(loaders(one_group)):
        loader.load_state_dict(state["states"][rank])
        tail = [digest(b) for b in itertools.islice(loader, steps - len(head[rank]))]
        assert head[rank] + tail == whole[rank], f"rank {rank} diverged after the resume"


def test_a_reader_resumed_at_the_end_of_a_unit_goes_on_to_the_next(one_group: Path) -> None:
    # A snapshot taken right after the last row of a unit made a pack says (unit u, row = its
    # length): the reader must move on without reading the unit's row group again.
    loader = PackedLoader(one_group, CFG.model_copy(update={"num_workers": 0}), TOKENIZER, 0, 4)
    (first,) = stride(epoch_units(loader.source.sized_groups, 4, 5, 0, True), 0, 4)
    ends = len(row_order(first, 5, 0, True))
    loader.load_state_dict({**loader.state_dict(), "readers": [{"unit": 0, "row": ends}]})
    at_end = next(iter(loader))
    loader.load_state_dict({**loader.state_dict(), "readers": [{"epoch": 1}]})
    assert digest(at_end) == digest(next(iter(loader)))


def test_fewer_rows_than_readers_is_a_one_line_error(tmp_path: Path) -> None:
    write_shards(tmp_path, [sample("chat", seed=i) for i in range(3)])
    with pytest.raises(ValueError) as err:
        PackedLoader(tmp_path, CFG, TOKENIZER, dp_rank=1, dp_world_size=RANKS)
    message = str(err.value)
    assert "\n" not in message
    assert "3 row(s), fewer than its 4 readers" in message
    assert "2 data-parallel ranks x 2 loader workers" in message
    assert "--nproc-per-node" in message and "num_workers" in message
    assert not any(name in message for name in ("ShardConfig", "PackedLoader", "Reader"))
    PackedLoader(tmp_path, CFG.model_copy(update={"num_workers": 1}), TOKENIZER, 1, RANKS)


def test_a_reader_whose_rows_lose_the_draw_keeps_reading(tmp_path: Path) -> None:
    # One reader of two chat rows kept with p = 0.1: most epochs keep nothing; the stream must
    # go on to the epochs that do (only rows that can never be kept stop it).
    write_shards(tmp_path, [sample("chat", seed=i) for i in range(2)])
    weights = {"chat": 0.1, "vqa": 1.0}
    cfg = TINY.model_copy(update={"task_weights": weights, "weight_mode": "keep"})
    loader = PackedLoader(tmp_path, cfg, TOKENIZER)
    packs = list(itertools.islice(loader, 3))
    assert len(packs) == 3 and loader.stats.sampled_out > loader.stats.dialogues
    never = cfg.model_copy(update={"task_weights": {"chat": 0.0, "vqa": 1.0}})
    with pytest.raises(ValueError, match="kept no dialogue in epoch 0"):
        next(iter(PackedLoader(tmp_path, never, TOKENIZER)))


def test_synth_row_group_rows_from_the_command_line_and_the_config(tmp_path: Path) -> None:
    from synth.stages import load_run_config, run

    sources = str(ROOT / "examples/sources.yaml")
    command = ["synth", "run", "stage-a", "--no-progress", "--row-group-rows", "20"]
    result = subprocess.run(
        [sys.executable, "-m", *command, "--sources", sources, "--out", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert Source.open(tmp_path / "cli").rows_per_group == ((20, 20, 20, 5),)

    config = tmp_path / "run.yaml"
    config.write_text("row-group-rows: 30\nprogress: false\n")
    run(load_run_config("a", config, {"sources": sources, "out": tmp_path / "yaml"}))
    assert Source.open(tmp_path / "yaml").rows_per_group == ((30, 30, 5),)
