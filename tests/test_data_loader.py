"""PackedLoader: real shards, resume equals uninterrupted, disjoint and complete sharding,
corrupt and too-long rows counted, task weights."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from data_builders import TINY, TINY_TRANSFORMS, TOKENIZER, random_samples, sample, write_shards

from synth.contract import arrow_schema
from train.batch import PackedBatch
from train.data import DataConfig, PackedLoader, acceptance, plan_dialogue, stage2_task_weights
from train.data.sampling import stride
from train.data.source import Source


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), random_samples(48, seed=1))


def same(a: PackedBatch, b: PackedBatch) -> bool:
    for f in fields(PackedBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            ok = x.shape == y.shape and torch.equal(x, y)
        elif f.name == "vae_images":
            ok = len(x) == len(y) and all(torch.equal(i, j) for i, j in zip(x, y, strict=True))
        else:
            ok = x == y
        if not ok:
            return False
    return True


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_uninterrupted(shards: Path, workers: int) -> None:
    # small packs relative to the dialogues, so the overflow buffer is never empty at a pause
    cfg = TINY.model_copy(
        update={"num_workers": workers, "seed": 3, "pack_tokens": 300, "max_dialogue_tokens": 300}
    )
    whole = list(itertools.islice(PackedLoader(shards, cfg, TOKENIZER), 14))

    first = PackedLoader(shards, cfg, TOKENIZER)
    head = list(itertools.islice(first, 5))
    state = json.loads(json.dumps(first.state_dict()))  # plain data, survives a checkpoint
    assert all(reader["buffer"] for reader in state["readers"])
    resumed = PackedLoader(shards, cfg, TOKENIZER)
    resumed.load_state_dict(state)
    tail = list(itertools.islice(resumed, 9))

    assert len(whole) == 14
    assert all(same(a, b) for a, b in zip(whole, head + tail, strict=True))
    # the stream runs across epochs (epochs=None): 9 packs need more than the 48 dialogues
    assert resumed.stats.packs == 14 and resumed.stats.rows_read > 48


def test_ranks_and_workers_read_disjoint_complete_data(shards: Path) -> None:
    all_ids = sorted(
        s.sample_id for s in random_samples(48, seed=1)
    )  # the shards hold exactly these
    cfg = TINY.model_copy(update={"epochs": 1, "num_workers": 2})
    seen: list[str] = []
    for rank in range(2):
        loader = PackedLoader(shards, cfg, TOKENIZER, dp_rank=rank, dp_world_size=2)
        seen += [sid for batch in loader for sid in batch.sample_ids]
    assert sorted(seen) == all_ids

    groups = Source.open(shards).row_groups
    readers = [stride(groups, r, 4) for r in range(4)]
    assert sorted(g for r in readers for g in r) == sorted(groups)
    assert len(set(itertools.chain(*readers))) == len(groups)


def write_corrupt(directory: Path) -> None:
    good = random_samples(3, seed=7)
    bad_turns = good[0].to_row()
    bad_turns["turns"] = list(reversed(bad_turns["turns"]))  # assistant first
    garbage = good[1].to_row()
    garbage["images"] = [
        {**img, "image": {"bytes": b"not an image", "path": None}} for img in garbage["images"]
    ]
    truncated = sample("t_i_0_0", seed=5).to_row()  # header readable, pixels cut off
    data = truncated["images"][0]["image"]["bytes"]
    truncated["images"][0]["image"] = {"bytes": data[: len(data) // 2], "path": None}
    rows = [bad_turns, garbage, truncated, good[2].to_row()]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=arrow_schema()), directory / "train-00099-00000.parquet"
    )


def test_corrupt_and_too_long_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    samples = random_samples(20, seed=2)
    write_shards(tmp_path, samples)
    write_corrupt(tmp_path)
    limit = 200
    too_long = sum(plan_dialogue(s, TOKENIZER, TINY_TRANSFORMS).num_tokens > limit for s in samples)
    assert 0 < too_long < len(samples)
    cfg = TINY.model_copy(update={"epochs": 1, "max_dialogue_tokens": limit})
    loader = PackedLoader(tmp_path, cfg, TOKENIZER)
    batches = list(loader)
    stats = loader.stats
    assert stats.rows_read == 24 and stats.too_long == too_long
    assert stats.corrupt == {"invariant:turn-structure": 1, "image-decode": 2}
    assert (
        len(stats.corrupt_examples) == 3
        and "train-00099-00000.parquet" in stats.corrupt_examples[0]
    )
    assert stats.dialogues == 24 - too_long - 3 == sum(len(b.sample_lens) for b in batches)
    assert stats.packing_efficiency == sum(b.real_tokens for b in batches) / (512 * len(batches))


def test_task_weights_drop_and_require_tasks(tmp_path: Path) -> None:
    samples = [sample(t, seed=i) for i, t in enumerate(["chat", "vqa", "t_i_0_0"] * 6)]
    write_shards(tmp_path, samples)
    cfg = TINY.model_copy(
        update={"epochs": 1, "task_weights": {"chat": 1.0, "vqa": 0.0, "t_i_0_0": 1.0}}
    )
    loader = PackedLoader(tmp_path, cfg, TOKENIZER)
    tasks = Counter(t for batch in loader for t in batch.tasks)
    assert tasks == {"chat": 6, "t_i_0_0": 6} and loader.stats.sampled_out == 6
    with pytest.raises(ValueError, match=r"\['vqa'\] that task_weights does not mention"):
        PackedLoader(
            tmp_path,
            cfg.model_copy(update={"task_weights": {"chat": 1.0, "t_i_0_0": 1.0}}),
            TOKENIZER,
        )


def test_mixture_weights_set_stream_proportions() -> None:
    weights = stage2_task_weights()
    assert weights["vqa"] == 0.25 and weights["chat"] == 0.15
    assert weights["t_i_0_0"] == 0.5 and weights["ti_i_0_0"] == 1.0 and weights["t_i_i1_n"] == 0.1
    counts = {task: 1000 * (i + 1) for i, task in enumerate(weights)}
    p = acceptance(weights, counts, "mixture")
    kept = {t: counts[t] * p[t] for t in weights}
    total, wsum = sum(kept.values()), sum(weights.values())
    for t in weights:
        assert kept[t] / total == pytest.approx(weights[t] / wsum)
    assert max(p.values()) == 1.0
    keep = acceptance(weights, counts, "keep")
    assert keep["ti_i_0_0"] == 1.0 and keep["t_i_0_0"] == 0.5


def test_state_from_another_run_is_refused(shards: Path) -> None:
    loader = PackedLoader(shards, TINY, TOKENIZER)
    state = loader.state_dict()
    other = PackedLoader(shards, TINY.model_copy(update={"seed": 9}), TOKENIZER)
    with pytest.raises(ValueError, match="does not belong to this run"):
        other.load_state_dict(state)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="extra"):
        DataConfig.tiny(pack_tokenz=3)
    with pytest.raises(ValueError, match="exceeds pack_tokens"):
        DataConfig.tiny(max_dialogue_tokens=4096)
    with pytest.raises(ValueError, match="max_latent_size"):
        DataConfig.bagel(max_latent_size=32)


def test_resolve_files_reads_synth_dirs_and_hub_config_folders(tmp_path: Path) -> None:
    import shutil

    from synth.contract import Reject
    from synth.shards import ShardWriter
    from tests.builders import build_sample
    from train.data.source import resolve_files

    out = tmp_path / "stage-c"
    with ShardWriter(out) as writer:
        writer.add(build_sample("t_ti_0_0"))
        writer.add_reject(Reject(stage="c", reason="stage-c:no-caption", detail="x"))
        writer.mark(2)
    (shard,) = resolve_files([out])  # the samples, not the rejects
    assert shard.name.startswith("train-")
    hub = tmp_path / "download" / "data" / "stage-c"  # what `synth push` uploads, downloaded
    hub.mkdir(parents=True)
    shutil.copy(shard, hub / f"stage-c-{shard.name}")
    assert [p.name for p in resolve_files([hub])] == [f"stage-c-{shard.name}"]
    with pytest.raises(FileNotFoundError, match="holds no Parquet sample shards"):
        resolve_files([tmp_path / "download"])
