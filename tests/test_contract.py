"""Each invariant of the data contract has a sample that breaks it and the error that names it."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from synth.contract import (
    AUX_TASKS,
    DialogueSample,
    InvariantError,
    Part,
    make_sample_id,
    validate_row,
)
from taxonomy import TASKS
from tests.builders import build_sample, png_bytes


@pytest.mark.parametrize("task", sorted(TASKS))
def test_builders_make_valid_samples_of_every_task(task):
    sample = build_sample(task, seed=3)
    assert validate_row(sample.to_row()) == sample


def test_row_round_trip_keeps_image_bytes():
    sample = build_sample("ti_ti_i1_n", seed=5)
    row = sample.to_row()
    assert row["images"][0]["image"]["bytes"] == sample.images[0].data
    assert DialogueSample.from_row(row) == sample


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def _broken(task: str, mutate) -> dict:
    row = _lists(build_sample(task, seed=7).to_row())
    mutate(row)
    return row


def _final_user(row):
    return row["turns"][-2]


BREAKS = {
    "sample-id": ("t_i_0_0", lambda r: r.update(sample_id="")),
    "turn-structure:odd": ("t_i_0_0", lambda r: r["turns"].pop()),
    "turn-structure:order": ("t_i_i1_1", lambda r: r["turns"].insert(0, r["turns"].pop(1))),
    "empty-text": ("t_i_0_0", lambda r: _final_user(r)["parts"][0].update(text="  ")),
    "image-origin": ("ti_i_0_0", lambda r: _final_user(r)["parts"][0].update(origin="output")),
    "image-reference:range": ("t_i_0_0", lambda r: r["turns"][1]["parts"][0].update(image=9)),
    "image-reference:unused": (
        "t_i_0_0",
        lambda r: r["images"].append(
            {**r["images"][0], "image": {"bytes": png_bytes(1), "path": None}}
        ),
    ),
    "image-bytes": ("t_i_0_0", lambda r: r["images"][0].update(image={"bytes": b"", "path": None})),
    "call-reference": ("t_i_0_0", lambda r: _final_user(r)["parts"][0].update(call=42)),
    "task-name": ("t_i_0_0", lambda r: r.update(task="t_i_0_1")),
    "stage": ("t_ti_0_0", lambda r: r.update(stage="a")),
    "dependency-turns:after-final": ("t_i_i1_1", lambda r: r["provenance"].update(depends_on=[2])),
    "dependency-turns:unsorted": ("t_i_in_1", lambda r: r["provenance"].update(depends_on=[3, 1])),
    "distractor-rounds": ("t_i_i1_n", lambda r: r["provenance"]["distractor_turns"].pop()),
    "task-structure:input": ("t_i_0_0", lambda r: r.update(task="ti_i_0_0")),
    "task-structure:output": (
        "t_i_0_0",
        lambda r: r["turns"][-1]["parts"].append(
            {"type": "text", "text": "extra", "image": None, "origin": None, "call": None}
        ),
    ),
    "task-structure:no-deps": ("t_i_i1_1", lambda r: r["provenance"].update(depends_on=[])),
    "task-structure:modality": ("t_i_t1_1", lambda r: r.update(task="t_i_i1_1")),
    "task-structure:count": ("t_i_in_1", lambda r: r["provenance"].update(depends_on=[3])),
    "task-structure:depth-n-without-distractors": (
        "t_i_i1_1",
        lambda r: r.update(task="t_i_i1_n", stage="b"),
    ),
    "task-structure:undeclared-between": (
        "t_i_i1_n",
        lambda r: r["provenance"].update(distractor_turns=[]),
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_invariant_names_itself(case):
    task, mutate = BREAKS[case]
    invariant = case.split(":")[0]
    row = _broken(task, mutate)
    with pytest.raises(InvariantError) as err:
        validate_row(row)
    assert err.value.invariant == invariant, str(err.value)
    assert f"[{invariant}]" in str(err.value)


def test_schema_errors_name_the_field():
    row = build_sample("t_i_0_0").to_row()
    row["turns"][0]["role"] = "narrator"
    with pytest.raises(InvariantError, match=r"\[schema\] turns.0.role"):
        validate_row(row)


def test_parts_carry_exactly_their_fields():
    with pytest.raises(ValueError, match="a text part"):
        Part(type="text", image=0)
    with pytest.raises(ValueError, match="an image part"):
        Part(type="image", image=0)


def test_aux_tasks_share_the_contract():
    base = build_sample("ti_i_0_0").to_row()
    vqa = {
        "sample_id": "vqa-1",
        "task": "vqa",
        "stage": "source",
        "turns": [
            {
                "role": "user",
                "parts": [
                    {"type": "image", "text": None, "image": 0, "origin": "upload", "call": None},
                    {
                        "type": "text",
                        "text": "What animal is this?",
                        "image": None,
                        "origin": None,
                        "call": None,
                    },
                ],
            },
            {
                "role": "assistant",
                "parts": [
                    {"type": "text", "text": "A cat.", "image": None, "origin": None, "call": None}
                ],
            },
        ],
        "images": base["images"][:1],
        "provenance": {
            "seed": 0,
            "depends_on": [],
            "distractor_turns": [],
            "llm_calls": [],
            "parent_id": None,
        },
    }
    assert validate_row(vqa).task in AUX_TASKS
    chat = copy.deepcopy(vqa)
    chat.update(task="chat", images=[])
    chat["turns"][0]["parts"].pop(0)
    assert validate_row(chat).task == "chat"
    bad = copy.deepcopy(vqa)
    bad["turns"][1]["parts"].insert(
        0, {"type": "image", "text": None, "image": 0, "origin": "output", "call": None}
    )
    with pytest.raises(InvariantError, match="answer in text"):
        validate_row(bad)


def _text_part(row, turn):
    return next(p for p in row["turns"][turn]["parts"] if p["type"] == "text")


def _image_part(row, turn):
    return next(p for p in row["turns"][turn]["parts"] if p["type"] == "image")


# Samples that break two invariants name the one checked first. The checks share one pass over
# the parts: the per-turn checks (roles, empty text, image origins) come before every
# reference check, and the reference checks keep their order (image indices, unused images,
# image bytes, call indices), whichever turn breaks them.
ORDER = {
    "later empty text before an earlier bad image index": (
        "t_i_0_0",
        lambda r: (
            _image_part(r, 1).update(image=9),
            _text_part(r, 0).update(text=" "),
        ),
        "empty-text",
        "turn 0 has an empty text part",
    ),
    "image index before an earlier bad call index": (
        "t_i_i1_1",
        lambda r: (_text_part(r, 0).update(call=9), _image_part(r, 3).update(image=7)),
        "image-reference",
        "turn 3 references image 7",
    ),
    "the first bad image index, in turn order": (
        "t_i_i1_1",
        lambda r: (_image_part(r, 1).update(image=8), _image_part(r, 3).update(image=7)),
        "image-reference",
        "turn 1 references image 8",
    ),
    "image bytes before a bad call index": (
        "t_i_0_0",
        lambda r: (
            _text_part(r, 0).update(call=9),
            r["images"][0].update(image={"bytes": b"", "path": None}),
        ),
        "image-bytes",
        "image 0 has no bytes",
    ),
    "unused image before image bytes": (
        "t_i_0_0",
        lambda r: r["images"].append({**r["images"][0], "image": {"bytes": b"", "path": None}}),
        "image-reference",
        "image(s) [1] are not referenced",
    ),
}


@pytest.mark.parametrize("case", sorted(ORDER))
def test_the_first_broken_invariant_is_named(case):
    task, mutate, invariant, message = ORDER[case]
    with pytest.raises(InvariantError) as err:
        validate_row(_broken(task, mutate))
    assert err.value.invariant == invariant, str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "parts",
    [
        ("a", 5, ["bench:5"], "t_i_0_0"),
        ("b", -3, [], ""),
        ("c", 2**70, ['x"y\\z', "中文\n\t\x01", "\u2028é"], 'q"'),
        ("source", 0, ["coco:1", "coco:2"], ""),
    ],
)
def test_sample_id_hashes_the_json_of_its_parts(parts):
    # Ids must stay what they were: a resumed run and earlier shards name samples by them.
    stage, seed, sources, salt = parts
    text = json.dumps([stage, seed, list(sources), salt], ensure_ascii=False)
    expected = hashlib.sha256(text.encode()).hexdigest()[:24]
    assert make_sample_id(stage, seed, sources, salt) == expected
