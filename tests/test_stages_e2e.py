"""End to end: stage a -> b -> c on the bundled data, offline and through the fake OpenAI server."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import datasets
import pytest

from ops import TemplateBackend
from synth.contract import DialogueSample
from synth.shards import iter_samples, read_manifest
from synth.sources import SubjectRow, iter_source_rows, load_sources_file
from synth.stages.config import RunConfig
from synth.stages.dialogue import StageContext
from synth.stages.plan import WorkItem
from synth.stages.stage_a import StageA
from synth.stages.stage_b import DistractorPool, StageB
from synth.stages.stage_c import StageC
from taxonomy import TASKS, TaskName
from tests.stages_support import EXAMPLES, op_answer, run_stage

# The bundled data has no subject-composition source (two subjects plus the image of both), so
# t_i_in_1 and ti_i_i1_1 and what derives from them are built from hand-made items below.
PAIR_TASKS = {"t_i_in_1", "ti_i_i1_1"}


def check_structure(sample: DialogueSample) -> None:
    """The turn structure the task's name says, beyond the contract's own invariants."""
    name = TaskName.parse(sample.task)
    turns, prov = sample.turns, sample.provenance
    final = sample.final_turn
    base = TASKS[sample.task]
    while base.derived_from is not None:
        base = TASKS[str(base.derived_from)]
    own_rounds = {"t_i_0_0": 1, "ti_i_0_0": 1, "t_i_t1_1": 2, "t_i_i1_1": 2, "t_i_in_1": 3,
                  "ti_i_i1_1": 2}[str(base.name)]  # fmt: skip
    assert len(turns) // 2 == own_rounds + len(prov.distractor_turns) // 2
    if name.depth == "n":
        assert prov.distractor_turns == tuple(range(final - len(prov.distractor_turns), final))
        assert prov.parent_id and sample.stage in "bc"
    else:
        assert not prov.distractor_turns
    assert bool(turns[final].images) == (name.input == "ti")
    answer = [p.type for p in turns[final + 1].parts]
    assert answer == (["image", "text"] if name.output == "ti" else ["image"])
    if name.output == "ti":
        q, a = turns[final].parts[-1], turns[final + 1].parts[-1]
        ops = [prov.llm_calls[q.call].operation, prov.llm_calls[a.call].operation]  # type: ignore[index]
        assert ops == ["Q_from_caption", "A_from_caption"]
    if name.depth == "n":
        query = next(p for p in turns[final].parts if p.type == "text")
        dep_op = TASKS[str(replace(name, output="i"))].operations[-1]
        assert query.call is not None and prov.llm_calls[query.call].operation == dep_op


def test_bundled_data_a_b_c_with_the_template_backend(tmp_path: Path) -> None:
    a, b, ca, cb = (tmp_path / d for d in ("a", "b", "c-from-a", "c-from-b"))
    run_stage("a", sources=EXAMPLES, out=a)
    run_stage("b", **{"in": a}, out=b)
    run_stage("c", **{"in": a}, out=ca)
    run_stage("c", **{"in": b}, out=cb)
    made: set[str] = set()
    for out in (a, b, ca, cb):
        manifest = read_manifest(out)
        assert manifest.complete and not manifest.reject_counts, manifest.reject_counts
        for sample in iter_samples(out):
            check_structure(sample)
            made.add(sample.task)
    expected = {t for t, spec in TASKS.items() if not _from_pair(spec.name)}
    assert made == expected
    # Stage b deepened every depth-1 sample and passed the rest through unchanged.
    a_samples = {s.sample_id: s for s in iter_samples(a)}
    for sample in iter_samples(b):
        if sample.stage == "a":
            assert sample == a_samples[sample.sample_id]
        else:
            parent = a_samples[sample.provenance.parent_id]  # type: ignore[index]
            n = len(parent.turns) - 2
            assert sample.turns[:n] == parent.turns[:n]  # append-only
            assert sample.turns[-1] == parent.turns[-1]
            assert (
                sample.provenance.llm_calls[: len(parent.provenance.llm_calls)]
                == parent.provenance.llm_calls
            )
    assert read_manifest(a).config["sources_file"] == str(EXAMPLES)
    done = subprocess.run(
        [sys.executable, "-m", "synth", "validate", str(cb)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    loaded = datasets.load_dataset("parquet", data_dir=str(cb), split="train")
    assert loaded.num_rows == read_manifest(cb).samples


def _from_pair(name: TaskName) -> bool:
    spec = TASKS[str(name)]
    while spec.derived_from is not None:
        spec = TASKS[str(spec.derived_from)]
    return str(spec.name) in PAIR_TASKS


@pytest.mark.parametrize("task", sorted(PAIR_TASKS))
def test_composition_tasks_through_all_three_stages(task: str, tmp_path: Path) -> None:
    sources = load_sources_file(EXAMPLES)
    rows = iter_source_rows(sources.get("photo-subjects"), sources.base_dir)
    subjects = [next(rows) for _ in range(3)]
    assert all(isinstance(r, SubjectRow) for r in subjects)
    # The third subject photo stands in for the composition target: the builders read only
    # its caption and bytes, and the structure checked here does not depend on what it shows.
    item = WorkItem(task, tuple(subjects))
    cfg = RunConfig(out=tmp_path, sources=EXAMPLES)
    backend = TemplateBackend()

    async def build(stage: Any, item: Any, seed: int) -> DialogueSample:
        ctx = StageContext(cfg, backend, stage.origin(item), random.Random(seed))
        return await stage.build(item, ctx)  # type: ignore[no-any-return]

    stage_c = StageC(cfg, tmp_path)
    sample = asyncio.run(build(StageA(cfg, sources), item, 0))
    deep = asyncio.run(build(StageB(cfg, tmp_path, DistractorPool(sources, 50)), sample, 1))
    for s in (
        sample,
        deep,
        asyncio.run(build(stage_c, sample, 2)),
        asyncio.run(build(stage_c, deep, 3)),
    ):
        check_structure(s)
    assert (sample.task, deep.task) == (task, str(TaskName.parse(task).deepen()))


def test_bundled_data_through_the_fake_openai_server(tmp_path: Path, fake_openai) -> None:
    fake_openai.answer = op_answer
    llm = {"llm": "openai", "model": "gpt-4o-mini", "base_url": fake_openai.base_url}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_stage("a", sources=EXAMPLES, out=a, limit=16, **llm)
    run_stage("b", **{"in": a}, out=b, **llm)
    run_stage("c", **{"in": b}, out=c, **llm)
    summary = read_manifest(c).summary
    assert not read_manifest(a).reject_counts and not summary["rejects"]
    samples = list(iter_samples(c))
    assert len(samples) == 16
    for sample in samples:
        check_structure(sample)
        assert {call.backend for call in sample.provenance.llm_calls} == {"openai"}
    requests = len(fake_openai.log)
    assert (
        summary["llm"]["requests"]
        + read_manifest(a).summary["llm"]["requests"]
        + read_manifest(b).summary["llm"]["requests"]
        == requests
    )
    assert summary["llm"]["prompt_tokens"] > 0
    # A rerun of a finished stage sends nothing.
    run_stage("c", **{"in": b}, out=c, **llm)
    assert len(fake_openai.log) == requests
