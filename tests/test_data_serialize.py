"""Serialization of one dialogue: layout, position rule, loss indexes, transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from data_builders import ALL_TASKS, TINY_TRANSFORMS, TOKENIZER, sample, serialize
from PIL import Image

from train.data import DataConfig, ImageTransform, ImageTransformConfig, Transforms
from train.data.transforms import decode_rgb, patchify

SP = TOKENIZER.special


def token_ids(d) -> dict[int, int]:
    return dict(zip(d.text_index_N.tolist(), d.text_ids_N.tolist(), strict=True))


def test_layout_of_an_interleaved_long_range_dialogue() -> None:
    s = sample("t_ti_i1_n", seed=3)  # generate, distractor round(s), edit + Q, image + answer
    d = serialize(s)
    kinds = [(b.turn, b.kind) for b in d.blocks]
    # the generated image of turn 1 is read later: noised, then its clean latents and ViT tokens
    assert kinds[:5] == [(0, "text"), (1, "vae_noised"), (1, "vae_clean"), (1, "vit"), (1, "eot")]
    # the final answer image is followed by its text answer, so it has a clean copy too
    last = len(s.turns) - 1
    assert [k for t, k in kinds if t == last] == ["vae_noised", "vae_clean", "vit", "text", "eot"]
    # every assistant turn ends with exactly one end-of-turn token
    assert sum(k == "eot" for _, k in kinds) == len(s.turns) // 2
    ids = token_ids(d)
    for b in d.blocks:
        first, final = ids.get(b.start), ids.get(b.stop - 1)
        if b.kind == "text":
            assert (first, final) == (SP.im_start, SP.im_end)
            assert TOKENIZER.decode([ids[i] for i in range(b.start + 1, b.stop - 1)])
        elif b.kind == "eot":
            assert first == SP.end_of_turn
        else:
            assert (first, final) == (SP.vision_start, SP.vision_end)


@pytest.mark.parametrize("task", ["t_i_i1_1", "ti_i_0_0", "t_i_in_n"])
def test_a_final_image_with_nothing_after_it_is_only_noised(task: str) -> None:
    s = sample(task, seed=11)
    d = serialize(s)
    last = [b.kind for b in d.blocks if b.turn == len(s.turns) - 1]
    assert last == ["vae_noised", "eot"]
    uploads = [b.kind for b in d.blocks if b.role == "user" and b.is_image]
    assert uploads == ["vae_clean", "vit"] * (len(uploads) // 2)
    assert len(uploads) == 2 * sum(len(t.images) for t in s.turns if t.role == "user")


@pytest.mark.parametrize("task", ALL_TASKS)
def test_position_rule(task: str) -> None:
    d = serialize(sample(task, seed=5))
    pos = d.position_ids_L.tolist()
    expected, rope, noised_id = [], 0, None
    for b in d.blocks:  # the rule, restated: text advances per token, images per clean block
        n = b.stop - b.start
        if b.kind in ("text", "eot"):
            expected += list(range(rope, rope + n))
            rope += n
        elif b.kind == "vae_noised":
            expected += [rope] * n
            noised_id = rope
        else:
            if b.kind == "vae_clean" and b.role == "assistant":
                assert rope == noised_id  # the clean copy reuses the noised image's id
            expected += [rope] * n
            rope += 1
    assert pos == expected
    assert pos[0] == 0
    for b in d.blocks:
        if b.is_image:
            assert len(set(pos[b.start : b.stop])) == 1


@pytest.mark.parametrize("task", ALL_TASKS)
def test_loss_indexes_cover_exactly_assistant_text_intent_and_noised_latents(task: str) -> None:
    s = sample(task, seed=9)
    d = serialize(s)
    ids = token_ids(d)
    want_ce: dict[int, int] = {}
    want_mse: set[int] = set()
    for b in d.blocks:
        if b.role != "assistant":
            continue
        if b.kind in ("text", "eot", "vae_noised"):  # intent: the token before predicts it
            want_ce[b.start - 1] = ids[b.start]
        if b.kind == "text":
            want_ce.update({i: ids[i + 1] for i in range(b.start, b.stop - 1)})
        if b.kind == "vae_noised":
            want_mse.update(range(b.start + 1, b.stop - 1))
    ce = dict(zip(d.ce_index_C.tolist(), d.ce_labels_C.tolist(), strict=True))
    assert len(ce) == d.ce_index_C.numel()  # no position twice
    assert ce == want_ce
    # no user token predicts anything but the first token of the assistant's answer
    user_tokens = {i for b in d.blocks if b.role == "user" for i in range(b.start, b.stop)}
    answers = {b.start for b in d.blocks if b.role == "assistant"}
    assert all(i + 1 in answers for i in ce if i in user_tokens)
    # the noised latents are the MSE targets: latent tokens of the images with a finite timestep
    counts = [img.shape[1] * img.shape[2] // 16**2 for img in d.vae_images]
    spans = torch.split(d.vae_index_M, counts)
    mse = {
        i
        for span, t in zip(spans, d.timestep_logits_I, strict=True)
        if t.isfinite()
        for i in span.tolist()
    }
    assert mse == want_mse
    assert (d.expert_ids_L[d.vae_index_M] == 1).all() and int(
        d.expert_ids_L.sum()
    ) == d.vae_index_M.numel()
    assert d.noised_L.sum() == sum(b.stop - b.start for b in d.blocks if b.kind == "vae_noised")


def test_every_position_is_exactly_one_kind_of_token() -> None:
    d = serialize(sample("ti_ti_i1_n", seed=2))
    every = torch.cat([d.text_index_N, d.vit_index_P, d.vae_index_M]).sort().values
    assert torch.equal(every, torch.arange(d.num_tokens))
    assert (d.text_index_N.diff() > 0).all()
    patches = torch.cat(d.vit_patches)
    assert (
        patches.shape == (d.vit_index_P.numel(), 14 * 14 * 3) == (patches.shape[0], d.vit_patch_dim)
    )
    assert [p.shape[0] for p in d.vit_patches] == d.vit_seqlens_V.tolist()
    assert patches.min() >= -1 and patches.max() <= 1


def test_timesteps_come_from_the_rng() -> None:
    s = sample("t_i_in_1", seed=4)
    a, b, c = serialize(s, seed=1), serialize(s, seed=1), serialize(s, seed=2)
    assert torch.equal(a.timestep_logits_I, b.timestep_logits_I)
    assert not torch.equal(a.timestep_logits_I, c.timestep_logits_I)
    assert a.timestep_logits_I.isfinite().sum() == 3  # three generated images


BAGEL = Transforms.from_config(DataConfig.bagel())


@pytest.mark.parametrize(
    ("size", "vae", "vit"),
    [
        ((1024, 1024), (1024, 1024), (980, 980)),
        ((512, 512), (512, 512), (518, 518)),
        ((300, 200), (768, 512), (336, 224)),
        # long side capped: ViT 1000 * 980/4000 = 245 -> 17.5 patches -> rounds to 18 -> 252
        ((4000, 1000), (1024, 256), (980, 252)),
        # short side 100 -> 512 would make a 512x15360 image: the long-side cap wins at the end
        ((100, 3000), (32, 1024), (28, 980)),
    ],
)
def test_bagel_resize_rule(size, vae, vit) -> None:
    assert BAGEL.vae.target_size(*size) == vae
    assert BAGEL.vit.target_size(*size) == vit


def test_resize_respects_the_pixel_budget_and_stride() -> None:
    tf = ImageTransform(
        ImageTransformConfig(max_side=980, min_side=224, stride=14, max_pixels=200_000)
    )
    for size in [(980, 980), (3000, 2000), (640, 480), (225, 9000)]:
        w, h = tf.target_size(*size)
        assert w % 14 == 0 and h % 14 == 0 and max(w, h) <= 980 and w * h <= 200_000


def test_transform_output_and_patch_order() -> None:
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    x = TINY_TRANSFORMS.vit(img)
    assert x.shape == (3, 28, 42) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(28, 42)) and torch.allclose(x[1], -torch.ones(28, 42))
    ramp = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    patches = patchify(ramp, 2)
    assert patches.shape == (6, 12) and patches.dtype == torch.float32
    # patch (row 1, col 2) in (p, p, c) order, scaled to [-1, 1]
    want = ramp[2:4, 4:6, :].flatten().astype(np.float32) / 127.5 - 1
    assert np.allclose(patches[1 * 3 + 2].numpy(), want)


@pytest.mark.parametrize("size", [(131, 67), (40, 30), (64, 20)])  # down, up, mixed
def test_resize_matches_pil_bicubic(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(smooth).resize(size, Image.Resampling.BILINEAR)
    tf = ImageTransform(ImageTransformConfig(max_side=112, min_side=28, stride=14))
    w, h = tf.target_size(*img.size)
    pil = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)).astype(int)
    ours = tf.resize(img).astype(int)
    assert ours.shape == pil.shape == (h, w, 3) and (w, h) != img.size
    assert np.abs(ours - pil).max() <= 2


def test_transparency_is_composited_on_white() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buf, format="PNG")
    assert decode_rgb(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)
