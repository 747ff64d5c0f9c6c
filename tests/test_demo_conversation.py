"""The demo's conversation and settings, without a browser: a tiny random ChatUMM (CPU) behind
``Conversation``, the page's messages as Gradio receives them, undo, references, think mode."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.infer_support import tiny_assets
from tests.model_batches import one_torch_thread  # noqa: F401
from train.demo.conversation import Conversation, parse_references
from train.demo.settings import Settings, from_panel
from train.infer import ImageOptions

FAST = Settings(steps=4, max_tokens=5, max_parts=2)


@pytest.fixture(scope="module")
def assets():
    return tiny_assets()


@pytest.fixture
def conv(assets, tmp_path: Path) -> Conversation:
    return Conversation(assets, threading.Lock(), tmp_path)


def _photo(tmp_path: Path, shade: int = 0) -> Path:
    gradient = Image.linear_gradient("L").resize((48, 32))
    path = tmp_path / f"photo-{shade}.png"
    Image.merge("RGB", (gradient, gradient.point(lambda v: (v + shade) % 256), gradient)).save(path)
    return path


def _images(messages: list[dict]) -> list[str]:
    return [m["content"]["path"] for m in messages if isinstance(m["content"], dict)]


def test_the_settings_hold_bagels_defaults_and_name_a_bad_knob() -> None:
    overrides = Settings().image_overrides()
    assert ImageOptions.for_context(False, overrides) == ImageOptions.t2i()
    assert ImageOptions.for_context(True, overrides) == ImageOptions.edit()
    set_all = Settings(cfg_img_scale="1.5", cfg_interval="0.2, 0.9", cfg_renorm_type="channel")
    for has_images in (False, True):
        opts = ImageOptions.for_context(has_images, set_all.image_overrides())
        assert (opts.cfg_img_scale, opts.cfg_interval, opts.cfg_renorm_type) == (
            1.5, (0.2, 0.9), "channel"
        )  # fmt: skip
    panel = {"steps": 8, "seed": 3, "cfg_interval": "auto", "temperature": 0.7}
    settings = from_panel({**vars(Settings()), **panel})
    assert settings.text_options().temperature == 0.7 and settings.image_overrides()["steps"] == 8
    for bad, match in (
        ({"cfg_interval": "0.4"}, "guidance interval '0.4'"),
        ({"cfg_interval": "0.9, 0.1"}, "cfg_interval must satisfy"),
        ({"cfg_img_scale": "strong"}, "image guidance scale 'strong'"),
        ({"cfg_text_scale": 0.5}, "cfg_text_scale must be >= 1"),
        ({"steps": None}, r"settings \['steps'\] are empty"),
        ({"top_p": 0}, "top_p must be in"),
        ({"max_parts": 0}, "parts per answer must be at least 1"),
        ({"cfg_renorm_type": "loud"}, "renorm type 'loud'"),
    ):
        with pytest.raises(ValueError, match=match):
            from_panel({**vars(Settings()), **bad})


def test_references_name_images_of_the_history() -> None:
    assert parse_references("[image 2] make it night [image 2] [image 1]", 2) == (
        [1, 0], "make it night"
    )  # fmt: skip
    assert parse_references("no images here", 0) == ([], "no images here")
    with pytest.raises(ValueError, match=r"\[image 3\]: this conversation has 2 image"):
        parse_references("[image 3] again", 2)


def test_a_reply_streams_text_and_flow_steps_then_shows_the_turn(conv: Conversation) -> None:
    views = list(conv.stream("a fox in the snow", [], FAST, mode="image"))
    assert views[0][0] == {"role": "user", "content": "a fox in the snow"}
    status = [m["metadata"]["title"] for v in views for m in v if "metadata" in m]
    assert status[0] == "waiting for the model"
    assert [s for s in status if s.startswith("drawing")][:3] == [
        f"drawing: step {k} of 3" for k in (1, 2, 3)
    ]
    final = views[-1]
    assert final == conv.messages() and all("metadata" not in m for m in final)
    assert [m["role"] for m in final][:2] == ["user", "assistant"]
    (drawn,) = _images(final)
    with Image.open(drawn) as image:
        assert image.size == (64, 64)
    assert Path(drawn).read_bytes() == conv.chat.images[0].data


def test_text_streams_as_it_is_decoded(assets, tmp_path: Path) -> None:
    conv = Conversation(assets, threading.Lock(), tmp_path)
    views = list(conv.stream("hello there", [], FAST, mode="text"))
    (part, *_) = conv.chat.turns[1].parts
    assert part.type == "text" and part.text
    texts = [
        v[1]["content"] for v in views[1:-1] if len(v) > 1 and isinstance(v[1]["content"], str)
    ]
    assert len(texts) >= 2 and texts[-1] == part.text  # one view per decoded token
    assert all(part.text.startswith(t) for t in texts)
    assert views[-1] == conv.messages()


def test_references_show_an_earlier_image_again_and_undo_gives_the_message_back(
    conv: Conversation, tmp_path: Path
) -> None:
    list(conv.stream("a fox", [], FAST, mode="image"))
    assert conv.image_at(1) == 0 and conv.image_at(0) is None
    photo = _photo(tmp_path)
    *_, final = conv.stream("[image 1] put it in my photo", [photo], FAST, mode="image")
    user = conv.chat.turns[2]
    assert [(p.type, p.image) for p in user.parts] == [("image", 0), ("image", 1), ("text", None)]
    assert conv.chat.images[1].data == photo.read_bytes()
    assert len(_images(final)) == 4  # drawn, shown again, the upload, drawn
    length = conv.chat.ctx.cache.length

    message = conv.undo()
    assert message is not None and message["text"] == "[image 1] put it in my photo"
    (restored,) = message["files"]
    assert Path(restored).read_bytes() == photo.read_bytes()
    assert len(conv.chat.turns) == 2 and len(conv.chat.images) == 1
    *_, again = conv.stream(message["text"], message["files"], FAST, mode="image")
    assert conv.chat.ctx.cache.length == length  # the same turn, exactly where it was
    assert again == final  # the same seed after the same context: the same pictures


def test_a_failed_message_leaves_the_conversation_as_it_was(
    conv: Conversation, tmp_path: Path
) -> None:
    list(conv.stream("a fox", [], FAST, mode="image"))
    before = (list(conv.chat.turns), conv.chat.ctx.cache.length, list(conv.messages()))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError):
        list(conv.stream("edit this", [_photo(tmp_path), broken], FAST, mode="image"))
    with pytest.raises(ValueError, match="write a message"):
        list(conv.stream("  ", [], FAST))
    with pytest.raises(ValueError, match="steps must be at least 2"):
        list(conv.stream("a cat", [], Settings(steps=1)))
    assert (list(conv.chat.turns), conv.chat.ctx.cache.length, conv.messages()) == before
    assert len(conv.chat.images) == 1


def test_think_mode_replays_the_conversation_after_the_planning_prompt(
    conv: Conversation,
) -> None:
    list(conv.stream("a fox", [], FAST, mode="image"))
    plain = conv.chat.ctx.cache.length
    *_, final = conv.stream("now a cat", [], FAST, mode="image", think=True)
    assert conv.chat.think and [t.role for t in conv.chat.turns] == ["user", "assistant"] * 2
    plan = conv.chat.turns[3].parts[0]
    assert plan.type == "text" and conv.chat.turns[3].parts[1].type == "image"
    assert conv.chat.ctx.cache.length > plain
    assert np.asarray(Image.open(_images(final)[0])).shape == (64, 64, 3)
