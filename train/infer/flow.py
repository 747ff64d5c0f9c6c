"""Flow-matching image generation: the shifted schedule, three-branch guidance, Euler steps.

The model predicts the rectified-flow velocity v = noise - x0 at (x_t, t), t = 1 being pure noise
(``train/model/losses.py``). Sampling starts from Gaussian noise at t = 1 and takes Euler steps
``x <- x - v (t_i - t_{i+1})`` along ``t_i = shift(linspace(1, 0, steps))`` down to t = 0.

Guidance combines the velocities of three branches (``train.infer.context``): v (full context),
v_t (without the last text part) and v_i (text parts only), as BAGEL does:

    text guided   u = v_t + s_text (v - v_t)
    image guided  w = v_i + s_img (u - v_i)
    renorm        the result scaled by clamp(|v| / |result|, min, 1), the norms taken over the
                  whole image (``global``) or per token (``channel``); ``text_channel`` rescales
                  u per token before the image guidance instead of rescaling the result.

A branch runs only at the steps where its scale is above 1 and t lies in the guidance interval,
and the branches of a step run as one batched forward. BAGEL applies no guidance at all when
the text scale is 1; here the image guidance still applies then (with text scale 1, u = v).

Shape suffixes: M latent tokens, C latent channels, B branches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from train.infer.context import Context, NoisedQuery
from train.infer.options import ImageOptions, RenormType

EPS = 1e-8  # BAGEL's guard in the renorm ratio


def schedule(steps: int, shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """[steps] float32 timesteps from 1 to 0, shifted: s t / (1 + (s - 1) t)."""
    t = torch.linspace(1, 0, steps, device=device)
    return shift * t / (1 + (shift - 1) * t)


def _renorm(
    reference: torch.Tensor, guided: torch.Tensor, per_token: bool, floor: float
) -> torch.Tensor:
    """``guided`` scaled by clamp(|reference| / |guided|, floor, 1), norms per token or whole."""
    if per_token:
        ratio = reference.norm(dim=-1, keepdim=True) / (guided.norm(dim=-1, keepdim=True) + EPS)
    else:
        ratio = reference.norm() / (guided.norm() + EPS)
    return guided * ratio.clamp(min=floor, max=1.0)


def guide(
    v_MC: torch.Tensor,
    v_text_MC: torch.Tensor | None,
    v_img_MC: torch.Tensor | None,
    text_scale: float,
    img_scale: float,
    renorm: RenormType,
    renorm_min: float,
) -> torch.Tensor:
    """The guided velocity; a branch given as None (or its scale 1) is left out."""
    if v_text_MC is None and v_img_MC is None:
        return v_MC
    u = v_MC if v_text_MC is None else v_text_MC + text_scale * (v_MC - v_text_MC)
    if renorm == "text_channel":
        u = _renorm(v_MC, u, per_token=True, floor=renorm_min)
        return u if v_img_MC is None else v_img_MC + img_scale * (u - v_img_MC)
    w = u if v_img_MC is None else v_img_MC + img_scale * (u - v_img_MC)
    return _renorm(v_MC, w, per_token=renorm == "channel", floor=renorm_min)


def generate_latents(
    ctx: Context,
    grid: tuple[int, int],
    noise_MC: torch.Tensor,
    opts: ImageOptions,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``noise_MC`` into clean latent tokens [M, C] (float32) for an image of ``grid``
    (rows, cols) following the context; the context itself is left unchanged. ``on_step(done,
    total)`` is called after each of the ``opts.steps - 1`` Euler updates (progress reports)."""
    use_text, use_img = opts.cfg_text_scale > 1, opts.cfg_img_scale > 1
    img_branch = ctx.image_cfg_branch() if use_img else None  # may append to the cache: first
    branches = [ctx.full_branch()]
    if use_text:
        branches.append(ctx.text_cfg)
    if img_branch is not None:
        branches.append(img_branch)
    guided = ctx.query(grid, branches) if len(branches) > 1 else None
    plain: NoisedQuery | None = None

    ts = schedule(opts.steps, opts.timestep_shift)
    dts = ts[:-1] - ts[1:]
    lo, hi = opts.cfg_interval
    x_MC = noise_MC.to(device=ctx.device, dtype=torch.float32)
    for i in range(opts.steps - 1):
        t = float(ts[i])
        # compared in float32, as BAGEL compares its float32 timesteps
        if guided is not None and bool((ts[i] > lo) & (ts[i] <= hi)):
            v_B = guided.velocity(x_MC, t)
            v_text = v_B[1] if use_text else None
            v_img = v_B[-1] if use_img else None
            v = guide(
                v_B[0], v_text, v_img, opts.cfg_text_scale, opts.cfg_img_scale,
                opts.cfg_renorm_type, opts.cfg_renorm_min,
            )  # fmt: skip
        else:
            if plain is None:
                plain = ctx.query(grid, branches[:1])
            v = plain.velocity(x_MC, t)[0]
        x_MC = x_MC - v * dts[i].to(x_MC.device)
        if on_step is not None:
            on_step(i + 1, opts.steps - 1)
    return x_MC
