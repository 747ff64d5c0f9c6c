"""Every kind of bad input becomes a row of the rejects table with its reason, never a crash
and never a silent drop: bad source rows, rows no enabled task can use, answers the parser
refuses, samples with no unrelated distractor, final images without a caption."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

from PIL import Image

from synth.shards import iter_rejects, iter_samples, read_manifest
from tests.fakes._server import FakeRequest
from tests.stages_support import op_answer, run_stage


def _png(path: Path, color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path.name


def _jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def bad_sources(root: Path) -> Path:
    red, blue, green = (_png(root / f"{c}.png", c) for c in ("red", "blue", "green"))
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    _jsonl(root / "t2i.jsonl", [
        {"image": red, "caption": "A red lighthouse on a rocky cape at dusk."},
        {"image": blue, "caption": ""},                                      # source:no-caption
        {"image": "broken.png", "caption": "A blue kite over a beach."},     # source:bad-image
        "{not json",                                                         # source:bad-json
    ])  # fmt: skip
    _jsonl(root / "edit.jsonl", [
        {"source_image": red, "source_caption": "A red barn in a snowy field.",
         "instruction": "Paint the barn green.", "target_image": green,
         "target_caption": "A green barn in a snowy field."},
        {"source_image": red, "source_caption": "A red barn.", "instruction": "",
         "target_image": green},                                          # source:empty-instruction
        {"source_image": red, "instruction": "Make it blue.",
         "target_image": blue},        # no captions: only ti_i_0_0 could use it (plan:no-task)
    ])  # fmt: skip
    _jsonl(root / "vqa.jsonl", [
        {"image": blue, "question": "What colour is it?", "answer": "Blue."},
        {"image": blue, "question": "", "answer": "Blue."},                 # source:no-question
        {"image": blue, "question": "Is it round?", "answer": ""},          # source:no-answer
    ])  # fmt: skip
    _jsonl(root / "chat.jsonl", [
        {"turns": [{"role": "user", "content": "Name a prime number."},
                   {"role": "assistant", "content": "Seven."}]},
        {"turns": [{"role": "assistant", "content": "Hello."}]},            # source:bad-turns
    ])  # fmt: skip
    sources = root / "sources.yaml"
    sources.write_text(
        "sources:\n"
        + "".join(
            f"  - {{name: {n}, kind: {n}, path: {n}.jsonl}}\n"
            for n in ("t2i", "edit", "vqa", "chat")
        )
    )
    return sources


def test_every_bad_row_kind_lands_in_the_rejects_table(tmp_path: Path) -> None:
    sources = bad_sources(tmp_path)
    out = tmp_path / "a"
    # Only sequential editing enabled: the caption-less edit row has no task it can feed.
    run_stage("a", sources=sources, out=out, mix={"t_i_i1_1": 1.0, "t_i_0_0": 1.0})
    reasons = Counter(r.reason for r in iter_rejects(out))
    assert reasons == {
        "source:no-caption": 1,
        "source:bad-image": 1,
        "source:bad-json": 1,
        "source:empty-instruction": 1,
        "source:no-question": 1,
        "source:no-answer": 1,
        "source:bad-turns": 1,
        "plan:no-task-for-row": 1,
    }
    assert read_manifest(out).reject_counts == reasons
    for reject in iter_rejects(out):
        assert reject.detail and reject.source
    assert read_manifest(out).samples == 2  # the good t2i row and the good edit row


def test_refused_answers_missing_distractors_and_captions_are_rejects(
    tmp_path: Path, fake_openai
) -> None:
    sources = bad_sources(tmp_path)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"

    def garbled_caption2qa(request: FakeRequest) -> str:
        if request.messages[-1][1].startswith("Turn the given image caption into a short"):
            return "<Result><User>only one field</User></Result>"
        return op_answer(request)

    fake_openai.answer = garbled_caption2qa
    llm = {"llm": "openai", "base_url": fake_openai.base_url}
    run_stage("a", sources=sources, out=a, mix={"t_i_t1_1": 1.0, "ti_i_0_0": 1.0}, **llm)
    reasons = Counter(r.reason for r in iter_rejects(a))
    assert reasons["parse:wrong-count"] == 1  # the t2i row's caption2QA_q answers, 3 attempts
    refused = next(r for r in iter_rejects(a) if r.reason == "parse:wrong-count")
    assert refused.operation == "caption2QA_q" and refused.raw_response and refused.task

    # Both edits became ti_i_0_0 (depth 0): stage b leaves them in the stage-a output, and
    # stage c cannot ask a question about the final image of the edit whose source has no
    # captions.
    run_stage("b", **{"in": a}, out=b, **llm)
    assert read_manifest(b).samples == 0
    run_stage("c", **{"in": [a, b]}, out=c, **llm)
    c_reasons = Counter(r.reason for r in iter_rejects(c))
    assert c_reasons["stage-c:no-caption"] == 1
    assert read_manifest(c).samples + sum(c_reasons.values()) == read_manifest(a).samples


def test_no_unrelated_distractor_is_a_reject(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    red = _png(root / "red.png", "red")
    _jsonl(root / "t2i.jsonl", [
        {"image": red, "caption": "A red lighthouse on a rocky cape."},
        {"image": red, "caption": "A white lighthouse beside a harbour."},
    ])  # fmt: skip
    (root / "sources.yaml").write_text("sources:\n  - {name: t2i, kind: t2i, path: t2i.jsonl}\n")
    a, b = tmp_path / "a", tmp_path / "b"
    run_stage("a", sources=root / "sources.yaml", out=a, mix={"t_i_t1_1": 1.0})
    run_stage("b", **{"in": a}, out=b, distractor_mix={"t2i": 1.0})
    # Each target's only possible distractor is the other lighthouse, or itself.
    assert Counter(r.reason for r in iter_rejects(b)) == {"stage-b:no-unrelated-distractor": 2}
    assert not list(iter_samples(b))


def test_a_composition_distractor_must_be_unrelated_to_both_subjects(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    red, blue, green = (_png(root / f"{c}.png", c) for c in ("red", "blue", "green"))
    # No target caption: what the distractors are checked against is the two subjects alone.
    _jsonl(root / "compose.jsonl", [
        {"first_image": red, "first_caption": "A red lighthouse on a rocky cape.",
         "second_image": blue, "second_caption": "A striped kite above the dunes.",
         "target_image": green},
        {"first_image": blue, "first_caption": "A striped kite above the dunes.",
         "second_image": red, "second_caption": "A red lighthouse on a rocky cape.",
         "target_image": green},
    ])  # fmt: skip
    related = [
        {"image": red, "question": "Where does the lighthouse stand?", "answer": "On a cape."},
        {"image": blue, "question": "What flies over the dunes?", "answer": "A kite."},
    ]
    unrelated = {"image": green, "question": "How many legs has a spider?", "answer": "Eight."}
    sources = root / "sources.yaml"
    sources.write_text(
        "sources:\n  - {name: pairs, kind: compose, path: compose.jsonl}\n"
        "  - {name: qa, kind: vqa, path: vqa.jsonl}\n"
    )
    a = tmp_path / "a"
    _jsonl(root / "vqa.jsonl", related)
    run_stage("a", sources=sources, out=a, seed=5)
    assert {s.task for s in iter_samples(a)} == {"t_i_in_1", "ti_i_i1_1"}

    # Each vqa row names one of the two subjects: neither may come between them and the request.
    run_stage("b", **{"in": a}, out=tmp_path / "b1", distractors=(1, 1))
    assert Counter(r.reason for r in iter_rejects(tmp_path / "b1")) == {
        "stage-b:no-unrelated-distractor": 2
    }
    _jsonl(root / "vqa.jsonl", [*related, unrelated])
    run_stage("b", **{"in": a}, out=tmp_path / "b2", sources=sources, distractors=(1, 1))
    deep = list(iter_samples(tmp_path / "b2"))
    assert {s.task for s in deep} == {"t_i_in_n", "ti_i_i1_n"}
    for sample in deep:
        (question, _) = sample.provenance.distractor_turns
        assert unrelated["question"] in sample.turns[question].text
