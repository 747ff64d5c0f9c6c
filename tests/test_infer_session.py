"""The Chat session on a tiny random ChatUMM (CPU): reproducibility, images entering the
context, intent, think mode, turns in the data contract's shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synth.contract import DialogueSample, Provenance
from tests.builders import build_sample
from tests.infer_support import tiny_assets
from tests.model_batches import one_torch_thread  # noqa: F401
from train.data import serialize_dialogue
from train.infer import (
    Chat,
    DenoisingStep,
    ImageDrawn,
    ImageOptions,
    TextOptions,
    TextSoFar,
    continue_dialogue,
)
from train.infer.text import generate_text_part

FAST = {"steps": 4}
SHORT = TextOptions(max_tokens=6)


@pytest.fixture(scope="module")
def assets():
    return tiny_assets()


def _chat(assets, seed: int = 0, **kwargs) -> Chat:
    kwargs.setdefault("text", SHORT)
    kwargs.setdefault("image_overrides", FAST)
    return Chat(assets, seed=seed, **kwargs)


def _photo(shade: int) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((48, 32))
    return Image.merge("RGB", (gradient, gradient.point(lambda v: (v + shade) % 256), gradient))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_greedy_text_is_reproducible_and_follows_the_argmax(assets) -> None:
    first = _chat(assets, seed=0).send("tell me about foxes", mode="text")
    second = _chat(assets, seed=123).send("tell me about foxes", mode="text")
    assert first.turn == second.turn  # greedy: the seed plays no part
    assert first.turn.parts[0].type == "text"

    sp = assets.tokenizer.special
    chat = _chat(assets)
    chat.add_user("tell me about foxes")
    ids = generate_text_part(chat.ctx, sp.im_start, sp.im_end, SHORT, torch.Generator())
    assert assets.tokenizer.decode(ids) == first.turn.parts[0].text
    replay = _chat(assets)
    replay.add_user("tell me about foxes")
    replay.ctx.add_tokens([sp.im_start])
    for token in ids:  # each token is the argmax after the ones before it
        assert token == int(torch.argmax(replay.ctx.next_logits()))
        replay.ctx.add_tokens([token])


def test_sampled_text_is_reproducible_for_a_seed(assets) -> None:
    options = TextOptions(max_tokens=8, temperature=1.0, top_p=0.9)
    texts = [_chat(assets, seed=s, text=options).send("hello", mode="text").text for s in (5, 5, 6)]
    assert texts[0] == texts[1] != texts[2]


def test_seeded_images_are_reproducible(assets) -> None:
    a, b, c = (_chat(assets, seed=s).send("a red fox", mode="image") for s in (1, 1, 2))
    assert a.images and a.images[0].size == (64, 64)  # the tiny VAE transform's largest square
    assert np.array_equal(_pixels(a.images[0]), _pixels(b.images[0]))
    assert not np.array_equal(_pixels(a.images[0]), _pixels(c.images[0]))


def test_a_user_image_enters_the_context_and_changes_the_next_output(assets) -> None:
    plain, one, other = _chat(assets), _chat(assets), _chat(assets)
    plain.add_user("what is in the picture?")
    one.add_user("what is in the picture?", images=[_photo(0)])
    other.add_user("what is in the picture?", images=[_photo(90)])
    model = assets.model.config
    vae_tokens = (32 // model.image_stride) * (48 // model.image_stride)
    vit_tokens = (32 // model.vit.patch_size) * (48 // model.vit.patch_size)
    assert one.ctx.cache.length == plain.ctx.cache.length + vae_tokens + vit_tokens + 4
    assert one.ctx.rope[0] == plain.ctx.rope[0] + 2  # clean latents, then ViT: one id each
    assert not torch.allclose(one.ctx.next_logits(), other.ctx.next_logits())
    assert not torch.allclose(one.ctx.next_logits(), plain.ctx.next_logits())
    # the image is kept in the session as the contract's image record
    assert one.turns[0].parts[0].type == "image" and one.images[0].source == "user"


def test_a_generated_image_enters_the_context_and_changes_the_next_output(assets) -> None:
    chats = [_chat(assets, seed=s, max_parts=1) for s in (1, 2)]
    before = []
    for chat in chats:
        chat.add_user("draw a fox")
        before.append(chat.ctx.cache.length)
        chat.reply(mode="image")
    rows, cols = 4, 4  # a 64 x 64 image
    vit_rows, vit_cols = assets.transforms.vit.grid(64, 64)
    vit = vit_rows * vit_cols
    for chat, start in zip(chats, before, strict=True):
        # clean latents and ViT tokens of the generated image, then the end-of-turn token
        assert chat.ctx.cache.length == start + rows * cols + 2 + vit + 2 + 1
        assert chat.images[0].source == "model"
        chat.add_user("make it night")
    assert not torch.allclose(chats[0].ctx.next_logits(), chats[1].ctx.next_logits())


def test_the_intent_follows_the_model_logits(assets) -> None:
    sp = assets.tokenizer.special
    lm_head = assets.model.llm.lm_head.weight
    saved = lm_head.detach().clone()
    try:
        for favoured, expected in ((sp.vision_start, "image"), (sp.im_start, "text")):
            chat = _chat(assets, max_parts=1)
            chat.add_user("a fox")
            other = sp.im_start if favoured == sp.vision_start else sp.vision_start
            hidden = chat.ctx.last_hidden_D
            assert hidden is not None
            with torch.no_grad():  # logit(favoured) - logit(other) = 0.1 |h|^2 > 0
                lm_head[favoured] = lm_head[other] + 0.1 * hidden
            reply = chat.reply()
            assert reply.turn.parts[0].type == expected
            with torch.no_grad():
                lm_head.copy_(saved)
    finally:
        with torch.no_grad():
            lm_head.copy_(saved)

    # untouched weights: the choice is the larger of the two logits, and after an image the
    # model chooses between talking on and ending the turn the same way
    chat = _chat(assets, max_parts=3)
    chat.add_user("a fox")
    logits = chat.ctx.next_logits()
    first = "image" if logits[sp.vision_start] > logits[sp.im_start] else "text"
    assert chat.reply().turn.parts[0].type == first


def test_forced_modalities_and_the_end_of_a_turn(assets) -> None:
    chat = _chat(assets, max_parts=2)
    reply = chat.send("a fox", mode="image")
    assert reply.turn.parts[0].type == "image" and len(reply.turn.parts) <= 2
    reply = chat.send("what did you draw?", mode="text")
    assert reply.turn.parts[0].type == "text"
    with pytest.raises(ValueError, match="answers a user turn"):
        chat.reply()
    assert chat.ctx.cache.length > 0 and [t.role for t in chat.turns] == ["user", "assistant"] * 2


def test_think_mode_plans_in_the_full_context_only(assets) -> None:
    chat = _chat(assets, think=True, max_parts=1)
    text_only_before = list(chat.ctx.pending_text)  # the system prompt
    chat.add_user("a fox")
    condition = chat.ctx.text_cfg
    pending = list(chat.ctx.pending_text)
    reply = chat.reply(mode="image")
    plan, picture = reply.turn.parts
    assert plan.type == "text" and picture.type == "image"
    # the plan is no text-CFG condition: that branch was refreshed only by the image
    assert condition.limit < chat.ctx.text_cfg.limit
    # and it never enters the image-CFG stream: that stream holds the prompt, the user text, eot
    sp = assets.tokenizer.special
    assert chat.ctx.pending_text == [*pending, sp.end_of_turn]
    assert text_only_before and pending[: len(text_only_before)] == text_only_before


def test_a_session_is_a_dialogue_sample_training_can_read(assets) -> None:
    chat = _chat(assets, max_parts=1)
    chat.send("a red fox in the snow", mode="image")
    sample = chat.to_sample(task="t_i_0_0", stage="a")
    again = DialogueSample.from_row(sample.to_row())
    assert again == sample
    serialized = serialize_dialogue(
        sample, assets.tokenizer, assets.transforms, np.random.default_rng(0)
    )
    assert serialized.num_tokens > 0


def test_continue_dialogue_answers_a_samples_history(assets) -> None:
    sample = build_sample("t_ti_i1_n", seed=1)
    reply = continue_dialogue(
        assets, sample, seed=3, text=SHORT, image_overrides=FAST, mode="image"
    )
    again = continue_dialogue(
        assets, sample, seed=3, text=SHORT, image_overrides=FAST, mode="image"
    )
    assert reply.turn == again.turn and reply.turn.parts[0].type == "image"
    assert np.array_equal(_pixels(reply.images[0]), _pixels(again.images[0]))


def test_the_image_options_follow_the_context(assets) -> None:
    assert ImageOptions.for_context(False) == ImageOptions.t2i()
    edit = ImageOptions.for_context(True, {"steps": 8})
    assert (edit.cfg_img_scale, edit.cfg_interval, edit.cfg_renorm_type, edit.steps) == (
        2.0, (0.0, 1.0), "text_channel", 8
    )  # fmt: skip
    chat = _chat(assets, image_overrides={"steps": 3, "size": (50, 20)})
    reply = chat.send("a wide picture", mode="image")
    assert reply.images[0].size == (48, 16)  # rounded to the 16-px latent grid
    with pytest.raises(ValueError, match="latent position table"):
        _chat(assets, image_overrides={"size": (4096, 64)}).send("huge", mode="image")


def test_two_subjects_then_put_them_together(assets) -> None:
    """Multi-image turns: two uploads in one turn, and two drawn subjects composed later."""
    chat = _chat(assets, max_parts=1)
    start = chat.ctx.cache.length
    chat.add_user("put them together", images=[_photo(0), _photo(60)])
    one_image = (32 // 16) * (48 // 16) + 2 + (32 // 4) * (48 // 4) + 2
    assert (
        chat.ctx.cache.length
        == start + 2 * one_image + len(assets.tokenizer.encode("put them together")) + 2
    )
    assert [p.type for p in chat.turns[0].parts] == ["image", "image", "text"]
    reply = chat.reply(mode="image")
    assert reply.images[0].size == (48, 32)  # the size of the last image in the context

    drawn = _chat(assets, max_parts=1)
    for prompt in ("a white cat", "a golden retriever"):
        drawn.send(prompt, mode="image")
    before = drawn.ctx.cache.length
    reply = drawn.send("now draw the two of them together", mode="image")
    assert len(drawn.images) == 3 and reply.turn.parts[0].image == 2
    assert drawn.ctx.cache.length > before
    sample = drawn.to_sample(
        task="t_i_in_1", stage="a", provenance=Provenance(seed=0, depends_on=(1, 3))
    )
    assert [t.role for t in sample.turns] == ["user", "assistant"] * 3


def test_progress_reports_every_token_step_and_image_of_the_turn(assets) -> None:
    events: list = []
    chat = _chat(assets, seed=4, max_parts=3)
    chat.add_user("a fox")
    reply = chat.reply(mode="image", on_progress=events.append)
    quiet = _chat(assets, seed=4, max_parts=3).send("a fox", mode="image")
    assert reply.turn == quiet.turn  # listening changes nothing
    steps = [e for e in events if isinstance(e, DenoisingStep)]
    assert [(e.part, e.done, e.total) for e in steps[:3]] == [(0, 1, 3), (0, 2, 3), (0, 3, 3)]
    drawn = [e for e in events if isinstance(e, ImageDrawn)]
    assert [e.part for e in drawn] == [
        k for k, p in enumerate(reply.turn.parts) if p.type == "image"
    ]
    assert np.array_equal(_pixels(drawn[0].image), _pixels(reply.images[0]))
    # a text part streams as its text so far; the last report is the part's text
    for k, part in enumerate(reply.turn.parts):
        texts = [e.text for e in events if isinstance(e, TextSoFar) and e.part == k]
        if part.type == "text" and texts:
            assert texts[-1] == part.text and all(part.text.startswith(t) for t in texts)
    talk: list = []
    answer = _chat(assets).send("hello", mode="text")
    streamed = _chat(assets)
    streamed.add_user("hello")
    streamed.reply(mode="text", on_progress=talk.append)
    first = [e.text for e in talk if isinstance(e, TextSoFar) and e.part == 0]
    assert first
    assert first[-1] == answer.turn.parts[0].text


def test_a_user_turn_can_show_an_earlier_image_again(assets) -> None:
    chat = _chat(assets, max_parts=1)
    chat.send("a fox", mode="image")
    chat.add_user("make it night", refs=[0], images=[_photo(0)])
    parts = chat.turns[2].parts
    assert [(p.type, p.image, p.origin) for p in parts[:2]] == [
        ("image", 0, "upload"), ("image", 1, "upload")
    ]  # fmt: skip
    assert len(chat.images) == 2  # the drawn image is referenced, not copied
    chat.reply(mode="image")
    sample = chat.to_sample(task="ti_i_0_0", stage="a")
    assert sample.turns[2].parts[0].image == 0
    with pytest.raises(ValueError, match="image 7 is not in this conversation"):
        chat.add_user("again", refs=[7])


def test_truncate_goes_back_exactly_without_recomputing(assets) -> None:
    chat = _chat(assets, seed=2, max_parts=1)
    chat.send("a fox", mode="image")
    length, logits = chat.ctx.cache.length, chat.ctx.next_logits()
    chat.add_user("make it night", refs=[0], images=[_photo(30)])
    chat.generator.manual_seed(9)
    first = chat.reply(mode="image")
    assert len(chat.images) == 3
    chat.truncate(2)
    assert (len(chat.turns), len(chat.images), chat.ctx.cache.length) == (2, 1, length)
    assert torch.equal(chat.ctx.next_logits(), logits)
    chat.add_user("make it night", refs=[0], images=[_photo(30)])
    chat.generator.manual_seed(9)
    again = chat.reply(mode="image")
    assert again.turn == first.turn  # the same context: the same answer, to the pixel
    assert np.array_equal(_pixels(again.images[0]), _pixels(first.images[0]))

    # a reply that fails half-way is rolled back to its user turn, or before it
    chat.add_user("a wide one")
    before = chat.ctx.mark()
    chat.image_overrides = {"steps": 3, "size": (4096, 64)}
    with pytest.raises(ValueError, match="latent position table"):
        chat.reply(mode="image")
    chat.truncate(len(chat.turns))
    assert chat.ctx.cache.length == before.length and chat.turns[-1].role == "user"
    chat.truncate(4)
    assert len(chat.turns) == 4 and chat.turns[-1].role == "assistant"
    with pytest.raises(ValueError, match="cannot keep 9"):
        chat.truncate(9)
