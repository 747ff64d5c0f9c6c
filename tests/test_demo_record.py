"""Saving a demo conversation: the task its shape makes, the rows ``datasets``, ``synth inspect``
and training read, a clear refusal where no task fits."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import datasets
import numpy as np
import pytest
from rich.console import Console

from synth.contract import ImageRecord, Part, Turn
from synth.inspection import Selection, inspect_dir
from synth.shards import iter_samples, read_manifest
from tests.builders import png_bytes
from train.demo.record import conversation_sample, dependency_choices, save_sample

USER_IMAGE = ImageRecord(data=png_bytes(1), source="user", source_row="image-0")


def _say(text: str) -> Turn:
    return Turn(role="user", parts=(Part.of_text(text),))


def _answer(*kinds: str, image: int = 0) -> Turn:
    parts = [
        Part.of_image(image, "output") if kind == "image" else Part.of_text("here it is")
        for kind in kinds
    ]
    return Turn(role="assistant", parts=tuple(parts))


def _drawn(n: int) -> list[ImageRecord]:
    return [
        ImageRecord(data=png_bytes(10 + k), source="model", source_row=f"image-{k}")
        for k in range(n)
    ]


def test_the_task_follows_the_conversation_and_its_dependencies() -> None:
    images = _drawn(3)
    # one drawing: t_i_0_0 (stage a); with text after it: t_ti_0_0 (stage c)
    sample = conversation_sample([_say("a fox"), _answer("image")], images[:1])
    assert (sample.task, sample.stage) == ("t_i_0_0", "a")
    sample = conversation_sample([_say("a fox"), _answer("image", "text")], images[:1])
    assert (sample.task, sample.stage) == ("t_ti_0_0", "c")

    # a fox, then a chat turn, then "make the fox red" depending on the first round
    turns = [
        _say("a fox"), _answer("image", image=0),
        _say("what do foxes eat?"), _answer("text"),
        _say("make the fox red"), _answer("image", image=1),
    ]  # fmt: skip
    assert conversation_sample(turns, images[:2]).task == "t_i_0_0"
    sample = conversation_sample(turns, images[:2], depends_on=[1], seed=4)
    assert (sample.task, sample.stage) == ("t_i_i1_n", "b")
    assert sample.provenance.depends_on == (1,) and sample.provenance.distractor_turns == (2, 3)
    assert sample.provenance.seed == 4
    sample = conversation_sample(turns, images[:2], depends_on=[3])
    assert sample.task == "t_i_t1_1" and sample.provenance.distractor_turns == ()
    with pytest.raises(ValueError, match="turns with images and on text-only turns"):
        conversation_sample(turns, images[:2], depends_on=[1, 3])
    with pytest.raises(ValueError, match="the last request is turn 5"):
        conversation_sample(turns, images[:2], depends_on=[4])

    # two drawn subjects put together, with an upload: ti_i_in_1
    two = [
        _say("a cat"), _answer("image", image=0),
        _say("a dog"), _answer("image", image=1),
        Turn(role="user", parts=(Part.of_image(3, "upload"), Part.of_text("both, here"))),
        _answer("image", image=2),
    ]  # fmt: skip
    sample = conversation_sample(two, [*images, USER_IMAGE], depends_on=[1, 3])
    assert sample.task == "ti_i_in_1"

    # the same conversation, the same id; another, another id
    again = conversation_sample(two, [*images, USER_IMAGE], depends_on=[1, 3])
    assert again.sample_id == sample.sample_id and sample.sample_id.startswith("demo-")
    assert conversation_sample(two[:2], images[:1]).sample_id != sample.sample_id


def test_conversations_without_a_drawing_are_chat_or_vqa_and_others_are_refused() -> None:
    chat = conversation_sample([_say("hi"), _answer("text")], [])
    assert (chat.task, chat.stage) == ("chat", "source")
    look = Turn(role="user", parts=(Part.of_image(0, "upload"), Part.of_text("what is this?")))
    assert conversation_sample([look, _answer("text")], [USER_IMAGE]).task == "vqa"
    with pytest.raises(ValueError, match="record no dependencies"):
        conversation_sample([_say("hi"), _answer("text"), _say("and?"), _answer("text")], [], [1])

    drawn = [_say("a fox"), _answer("image"), _say("thanks"), _answer("text")]
    with pytest.raises(ValueError, match=r"the last answer is text; .* Undo it"):
        conversation_sample(drawn, _drawn(1))
    with pytest.raises(ValueError, match=r"the last answer is image \+ text \+ image"):
        conversation_sample(
            [_say("two"), Turn(role="assistant", parts=(
                Part.of_image(0, "output"), Part.of_text("and"), Part.of_image(1, "output")))],
            _drawn(2),
        )  # fmt: skip
    with pytest.raises(ValueError, match="nothing to save yet"):
        conversation_sample([_say("hello")], [])


def test_choices_label_each_turn_before_the_last_request() -> None:
    turns = [_say("a fox in the snow"), _answer("image"), _say("make it red"), _answer("image")]
    assert dependency_choices(turns) == [
        ("turn 1 (user): a fox in the snow", 0),
        ("turn 2 (assistant): image 1", 1),
    ]
    assert dependency_choices([]) == []


def test_saves_append_to_a_shard_directory_that_datasets_and_synth_inspect_read(
    tmp_path: Path,
) -> None:
    lock, out = threading.Lock(), tmp_path / "saved"
    first = conversation_sample([_say("a fox"), _answer("image")], _drawn(1))
    second = conversation_sample([_say("a cat"), _answer("image", "text")], _drawn(2)[1:])
    path = save_sample(first, out, lock, "runs/tiny")
    assert save_sample(first, out, lock) == path  # saved once
    other = save_sample(second, out, lock)
    assert other != path and read_manifest(out).complete and read_manifest(out).samples == 2

    assert [s.sample_id for s in iter_samples(out)] == [first.sample_id, second.sample_id]
    table = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert table["task"] == ["t_i_0_0", "t_ti_0_0"]
    image = table[0]["images"][0]["image"]  # decoded by the datasets Image feature
    assert np.asarray(image).shape[2] == 3
    console = Console(file=io.StringIO(), width=100)
    assert inspect_dir(out, Selection(limit=5), console) == 2
    assert "a fox" in console.file.getvalue()  # type: ignore[attr-defined]
