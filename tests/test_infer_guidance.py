"""The sampler's arithmetic against direct formulas: schedule, guidance, renormalisation, the
guidance interval, and guidance that is off (scales 1) equal to the unguided path."""

from __future__ import annotations

import pytest
import torch

from tests.infer_support import tiny_assets
from tests.model_batches import one_torch_thread  # noqa: F401
from train.infer import Chat, ImageOptions
from train.infer.flow import generate_latents, guide, schedule
from train.infer.options import TextOptions
from train.infer.text import choose_token


def test_schedule_is_the_shifted_uniform_grid() -> None:
    ts = schedule(5, 3.0)
    for t_raw, t in zip(torch.linspace(1, 0, 5).tolist(), ts.tolist(), strict=True):
        assert t == pytest.approx(3 * t_raw / (1 + 2 * t_raw), abs=1e-7)
    assert ts[0] == 1 and ts[-1] == 0 and bool((ts[:-1] > ts[1:]).all())
    torch.testing.assert_close(schedule(7, 1.0), torch.linspace(1, 0, 7))


def _velocities(seed: int, scale_img: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    v, vt, vi = (torch.randn(6, 8, generator=gen) for _ in range(3))
    return v, vt * 0.5, vi * scale_img


def _norm_ratio(reference: torch.Tensor, guided: torch.Tensor, lo: float) -> float:
    return min(max(float(reference.norm() / (guided.norm() + 1e-8)), lo), 1.0)


@pytest.mark.parametrize("renorm_min", [0.0, 0.9])
def test_global_renorm_matches_the_formula(renorm_min: float) -> None:
    v, vt, vi = _velocities(0)
    u = vt + 4.0 * (v - vt)
    w = vi + 2.0 * (u - vi)
    expected = w * _norm_ratio(v, w, renorm_min)
    got = guide(v, vt, vi, 4.0, 2.0, "global", renorm_min)
    torch.testing.assert_close(got, expected)
    assert _norm_ratio(v, w, 0.0) < 0.9  # so the two cases differ: the floor binds in one


@pytest.mark.parametrize("renorm_min", [0.0, 0.9])
def test_channel_renorm_rescales_each_token(renorm_min: float) -> None:
    v, vt, vi = _velocities(1)
    u = vt + 4.0 * (v - vt)
    w = vi + 2.0 * (u - vi)
    expected = torch.stack([w[m] * _norm_ratio(v[m], w[m], renorm_min) for m in range(6)])
    torch.testing.assert_close(guide(v, vt, vi, 4.0, 2.0, "channel", renorm_min), expected)


@pytest.mark.parametrize("renorm_min", [0.0, 0.9])
def test_text_channel_renorm_rescales_the_text_guidance_before_the_image_guidance(
    renorm_min: float,
) -> None:
    v, vt, vi = _velocities(2)
    u = vt + 4.0 * (v - vt)
    u = torch.stack([u[m] * _norm_ratio(v[m], u[m], renorm_min) for m in range(6)])
    expected = vi + 2.0 * (u - vi)
    torch.testing.assert_close(guide(v, vt, vi, 4.0, 2.0, "text_channel", renorm_min), expected)
    # without image guidance the result is the rescaled text guidance itself
    torch.testing.assert_close(guide(v, vt, None, 4.0, 1.0, "text_channel", renorm_min), u)


def test_renorm_never_scales_up() -> None:
    v, _vt, _ = _velocities(3)
    small = v * 0.01  # guided velocity smaller than the unguided one
    got = guide(v, v + (v - small) / 3, None, 4.0, 1.0, "global", 0.0)
    torch.testing.assert_close(got, small)


@pytest.mark.parametrize("renorm", ["global", "channel", "text_channel"])
def test_scales_of_one_return_the_unguided_velocity(renorm: str) -> None:
    v, vt, vi = _velocities(4)
    torch.testing.assert_close(guide(v, vt, vi, 1.0, 1.0, renorm, 0.0), v)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def chat() -> Chat:
    chat = Chat(tiny_assets())
    chat.add_user("a red fox in the snow", images=[_photo()])
    return chat


def _photo():
    from PIL import Image

    return Image.radial_gradient("L").convert("RGB").resize((48, 40))


def _euler(chat: Chat, noise: torch.Tensor, opts: ImageOptions, guided: bool) -> torch.Tensor:
    """The sampler written out: BAGEL's loop, guidance at lo < t <= hi."""
    ctx, grid = chat.ctx, (2, 2)
    branches = [ctx.full_branch(), ctx.text_cfg, ctx.image_cfg_branch()]
    ts = schedule(opts.steps, opts.timestep_shift)
    x = noise.clone()
    lo, hi = opts.cfg_interval
    for i in range(opts.steps - 1):
        t = ts[i]
        if guided and lo < float(t) <= hi:
            v, vt, vi = (ctx.query(grid, [b]).velocity(x, float(t))[0] for b in branches)
            v = guide(v, vt, vi, opts.cfg_text_scale, opts.cfg_img_scale, opts.cfg_renorm_type, 0.0)
        else:
            v = ctx.query(grid, branches[:1]).velocity(x, float(t))[0]
        x = x - v * (ts[i] - ts[i + 1])
    return x


def test_the_sampler_is_the_euler_loop_with_guidance_inside_the_interval(chat: Chat) -> None:
    noise = torch.randn(
        4, chat.assets.model.config.latent_dim, generator=torch.Generator().manual_seed(0)
    )
    opts = ImageOptions(steps=6, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.5, 1.0))
    got = generate_latents(chat.ctx, (2, 2), noise, opts)
    torch.testing.assert_close(got, _euler(chat, noise, opts, guided=True), rtol=0, atol=1e-5)
    unguided = _euler(chat, noise, opts, guided=False)
    assert (got - unguided).abs().max() > 1e-3  # guidance did something

    off = ImageOptions(steps=6, cfg_text_scale=1.0, cfg_img_scale=1.0)
    torch.testing.assert_close(
        generate_latents(chat.ctx, (2, 2), noise, off), unguided, rtol=0, atol=1e-6
    )
    outside = ImageOptions(steps=6, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 0.0))
    torch.testing.assert_close(
        generate_latents(chat.ctx, (2, 2), noise, outside), unguided, rtol=0, atol=1e-6
    )


def test_sampling_keeps_to_the_nucleus() -> None:
    logits = torch.tensor([3.0, 2.9, 0.0, -1.0, -2.0])
    gen = torch.Generator().manual_seed(0)
    nucleus = TextOptions(temperature=1.0, top_p=0.9)  # p = 0.505, 0.457, 0.025, ...
    assert {choose_token(logits, nucleus, gen) for _ in range(50)} == {0, 1}
    assert choose_token(logits, TextOptions(temperature=1.0, top_p=0.3), gen) == 0
    assert choose_token(logits, TextOptions(), gen) == 0  # greedy
    draws = [choose_token(logits, TextOptions(temperature=1.0), gen) for _ in range(400)]
    assert set(draws) >= {0, 1, 2}


def test_bad_options_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="cfg_text_scale"):
        ImageOptions(cfg_text_scale=0.5)
    with pytest.raises(ValueError, match="cfg_interval"):
        ImageOptions(cfg_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="unknown image options"):
        ImageOptions().with_overrides({"cfg_scale": 3})
    with pytest.raises(ValueError, match="top_p"):
        TextOptions(top_p=0)
