"""End to end: stage a -> b -> c on the bundled data, offline and through the fake OpenAI server."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import datasets

from synth.contract import DialogueSample
from synth.shards import iter_rejects, iter_samples, read_manifest
from synth.stages.dialogue import sample_id
from synth.stages.words import words_of
from taxonomy import TASKS, TaskName
from tests.stages_support import EXAMPLES, op_answer, run_stage


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
    if str(base.name) in ("t_i_in_1", "ti_i_i1_1"):
        # The answer is the composite: a third image of the compose row the two subjects are.
        subjects = [i for t in prov.depends_on for i in turns[t].images] + list(turns[final].images)
        answer_image = turns[final + 1].images[0]
        assert len(subjects) == 2 and answer_image not in subjects
        rows = {(sample.images[i].source, sample.images[i].source_row) for i in subjects}
        assert rows == {
            (sample.images[answer_image].source, sample.images[answer_image].source_row)
        }
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
        assert manifest.complete, out
        # The one kind of reject the bundled run has: the anchor check refusing a Chinese
        # rewrite it cannot judge (an English caption outside its word list); see
        # tests/test_bundled_words.py.
        assert set(manifest.reject_counts) <= {"validate:no-anchor"}, manifest.reject_counts
        for sample in iter_samples(out):
            check_structure(sample)
            made.add(sample.task)
    assert made == set(TASKS)  # all 20, the two-subject compositions included
    # Stage b deepened every depth-1 sample, once; depth-0 samples stay in the stage-a output.
    a_samples = {s.sample_id: s for s in iter_samples(a)}
    parents = [s.provenance.parent_id for s in iter_samples(b)]
    rejected = {r.sample_id for r in iter_rejects(b)}
    assert sorted(parents) == sorted(  # type: ignore[type-var]
        i
        for i, s in a_samples.items()
        if TASKS[s.task].name.depth == "1"
        and sample_id("b", 0, [i], str(TASKS[s.task].name.deepen())) not in rejected
    )
    for sample in iter_samples(b):
        parent = a_samples[sample.provenance.parent_id]  # type: ignore[index]
        n = len(parent.turns) - 2
        assert sample.turns[:n] == parent.turns[:n]  # append-only
        assert resolved(sample, -1) == resolved(parent, -1)  # the same answer, images in order
        kept = len({i for t in parent.turns[:n] for i in t.images})
        assert sample.images[:kept] == parent.images[:kept]
        uploads = [[p for p in resolved(s, -2) if p[0] == "image"] for s in (sample, parent)]
        assert uploads[0] == uploads[1]  # the final query is rewritten, its upload kept
        assert (
            sample.provenance.llm_calls[: len(parent.provenance.llm_calls)]
            == parent.provenance.llm_calls
        )
        check_unrelated_distractors(sample)
    assert read_manifest(a).config["sources_file"] == str(EXAMPLES)
    done = subprocess.run(
        [sys.executable, "-m", "synth", "validate", str(cb)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    loaded = datasets.load_dataset("parquet", data_dir=str(cb), split="train")
    assert loaded.num_rows == read_manifest(cb).samples

    # Stage c over both inputs (`--in a --in b`): every interleaved task.
    cab = tmp_path / "c-from-a-and-b"
    done = subprocess.run(
        [sys.executable, "-m", "synth", "run", "stage-c", "--in", str(a), "--in", str(b),
         "--out", str(cab), "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    both = {s.sample_id: s for s in iter_samples(cab)}
    assert {s.task for s in both.values()} == {t for t in TASKS if TASKS[t].stage == "c"}
    assert both == {s.sample_id: s for out in (ca, cb) for s in iter_samples(out)}
    assert read_manifest(cab).config["input"] == [str(a.resolve()), str(b.resolve())]


def resolved(sample: DialogueSample, turn: int) -> list[tuple]:
    """A turn's parts with their images as records, not indices (which stage b renumbers)."""
    return [
        (p.type, p.text, p.origin, None if p.image is None else sample.images[p.image])
        for p in sample.turns[turn].parts
    ]


def check_unrelated_distractors(sample: DialogueSample) -> None:
    """What a distractor round shows (its images' captions, the text it copied from its source)
    shares no content word with any image the final turn depends on: both subjects of a
    composition, not only one."""
    turns, images = sample.turns, sample.images
    dependencies = [
        images[i].caption for t in sample.provenance.depends_on for i in turns[t].images
    ]
    assert len(dependencies) == {"t1": 0, "i1": 1, "in": 2}[TaskName.parse(sample.task).dependency]
    for t in sample.provenance.distractor_turns:
        shown = [images[i].caption for i in turns[t].images]
        shown += [p.text or "" for p in turns[t].parts if p.type == "text" and p.call is None]
        assert words_of(shown).isdisjoint(words_of(dependencies)), (sample.task, shown)


def test_bundled_data_through_the_fake_openai_server(tmp_path: Path, fake_openai) -> None:
    fake_openai.answer = op_answer
    llm = {"llm": "openai", "model": "gpt-4o-mini", "base_url": fake_openai.base_url}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_stage("a", sources=EXAMPLES, out=a, limit=16, **llm)
    run_stage("b", **{"in": a}, out=b, **llm)
    run_stage("c", **{"in": [a, b]}, out=c, **llm)
    summary = read_manifest(c).summary
    assert not read_manifest(a).reject_counts and not summary["rejects"]
    samples = list(iter_samples(c))
    assert len(samples) == 16 + read_manifest(b).samples  # every sample of a and of b
    # The first 16 items of the plan mix every source, the compositions included.
    assert {"t_ti_in_n", "ti_ti_i1_n"} <= {s.task for s in samples}
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
    run_stage("c", **{"in": [a, b]}, out=c, **llm)
    assert len(fake_openai.log) == requests
