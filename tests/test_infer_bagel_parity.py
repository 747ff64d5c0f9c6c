"""Inference parity with BAGEL's official ``InterleaveInferencer`` on a tiny random model (fp32, CPU).

Skipped unless ``CHATUMM_BAGEL_SRC`` points at a BAGEL checkout (with ``transformers`` 4.49 and
``huggingface_hub<1.0`` importable), as ``tests/test_model_bagel_parity.py``, whose BAGEL set-up
(float32 ``flash_attn`` stand-in, fp32 ViT attention, our weights loaded strictly) this reuses.
For an fp32 comparison BAGEL's hard-coded bf16 casts in its attention are made float32 casts,
its causal stand-in is aligned bottom-right as flash-attn's is (queries after cached keys), and
its VAE encodes with the posterior mean (BAGEL samples the posterior when an image enters the
context; chatumm uses the mean). Same weights, inputs and noise: text ids equal, first-step logits
and velocities and the final image latents within 1e-4.

    CHATUMM_BAGEL_SRC=/path/to/Bagel pytest tests/test_infer_bagel_parity.py
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.infer_support import tiny_assets
from tests.model_batches import one_torch_thread  # noqa: F401
from tests.test_model_bagel_parity import _build_bagel, bagel_modules  # noqa: F401
from train.infer import Chat, ImageOptions, TextOptions
from train.infer.flow import generate_latents, schedule
from train.infer.text import generate_text_part
from train.model.bagel_adapter import DERIVED_KEYS, ours_to_bagel

BAGEL_SRC = os.environ.get("CHATUMM_BAGEL_SRC")
pytestmark = pytest.mark.skipif(not BAGEL_SRC, reason="set CHATUMM_BAGEL_SRC to a BAGEL checkout")
TOL = 1e-4
STEPS = 8


def _varlen_bottom_right(q, k, v, cu_seqlens_q, cu_seqlens_k, *args, causal=False, **kwargs):
    """flash-attn's varlen attention in float32; ``causal`` aligned to the bottom-right corner
    (a query sees every cached key and the new keys up to itself)."""
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        a, b = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        c, d = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        qq, kk, vv = (t.float().transpose(0, 1)[None] for t in (q[a:b], k[c:d], v[c:d]))
        mask = torch.ones(b - a, d - c, dtype=torch.bool).tril(d - c - (b - a)) if causal else None
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


class _Float32Torch(types.ModuleType):
    """``torch`` as BAGEL's qwen2_navit sees it, with bfloat16 standing for float32."""

    bfloat16 = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


@pytest.fixture(scope="module")
def bagel(bagel_modules):  # noqa: F811
    from modeling.bagel import qwen2_navit

    saved = qwen2_navit.flash_attn_varlen_func, qwen2_navit.torch
    qwen2_navit.flash_attn_varlen_func = _varlen_bottom_right
    qwen2_navit.torch = _Float32Torch("torch")
    try:
        yield bagel_modules
    finally:
        qwen2_navit.flash_attn_varlen_func, qwen2_navit.torch = saved


@pytest.fixture(scope="module")
def pair(bagel):
    """Our tiny assets and BAGEL's inferencer over the same weights."""
    from inferencer import InterleaveInferencer

    assets = tiny_assets(seed=0)
    ours = assets.model
    model, vae = _build_bagel(bagel, ours.config)
    state = ours.state_dict()
    for key in DERIVED_KEYS:
        state[key] = ours.get_submodule(key.rsplit(".", 1)[0]).get_buffer("table")
    model.load_state_dict(
        ours_to_bagel({k: v for k, v in state.items() if not k.startswith("vae.")})
    )
    vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")})
    vae.reg.sample = False
    model.eval(), vae.eval()
    tok, tf = assets.tokenizer, assets.transforms
    sp = tok.special
    inferencer = InterleaveInferencer(
        model=model,
        vae_model=vae,
        tokenizer=types.SimpleNamespace(encode=tok.encode, decode=lambda ids: tok.decode(list(map(int, ids)))),
        vae_transform=_Transform(tf.vae),
        vit_transform=_Transform(tf.vit),
        new_token_ids=dict(
            bos_token_id=sp.im_start, eos_token_id=sp.im_end,
            start_of_image=sp.vision_start, end_of_image=sp.vision_end,
        ),
    )  # fmt: skip
    return assets, inferencer


class _Transform:
    """BAGEL's transform interface over ours: ``resize_transform`` (PIL -> PIL) and a call
    (PIL -> [3, H, W] in [-1, 1])."""

    def __init__(self, tf):
        self.tf = tf

    def resize_transform(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(self.tf.resize(image))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.tf(image)


def _photo() -> Image.Image:
    gradient = Image.linear_gradient("L").resize((48, 32))  # both transforms keep 48 x 32
    return Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient)
    )


def _recorder(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list:
    """Record what ``owner.name`` returns, call by call (undone after the test)."""
    calls: list = []
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def _bagel_hyper(opts: ImageOptions) -> dict:
    return dict(
        cfg_text_scale=opts.cfg_text_scale, cfg_img_scale=opts.cfg_img_scale,
        cfg_interval=list(opts.cfg_interval), timestep_shift=opts.timestep_shift,
        num_timesteps=opts.steps, cfg_renorm_min=opts.cfg_renorm_min,
        cfg_renorm_type=opts.cfg_renorm_type,
    )  # fmt: skip


@pytest.mark.parametrize("case", ["t2i", "edit", "edit_channel"])
def test_image_generation_matches_bagel(pair, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assets, inferencer = pair
    model = inferencer.model
    if case == "t2i":
        opts = ImageOptions(steps=STEPS, size=(48, 32))
        inputs: list = ["a red fox in the snow"]
    else:
        opts = ImageOptions.edit().with_overrides({"steps": STEPS, "cfg_renorm_min": 0.2})
        if case == "edit_channel":
            opts = opts.with_overrides({"cfg_renorm_type": "channel", "cfg_interval": (0.3, 0.9)})
        inputs = [_photo(), "make it night"]
    flows = _recorder(monkeypatch, model, "_forward_flow")
    latents = _recorder(monkeypatch, model, "generate_image")
    torch.manual_seed(11)
    with torch.no_grad():
        (picture,) = inferencer.interleave_inference(
            inputs, image_shapes=(32, 48), **_bagel_hyper(opts)
        )
    ts = schedule(opts.steps, opts.timestep_shift)
    lo, hi = opts.cfg_interval
    first_guided = next(i for i, t in enumerate(ts.tolist()) if lo < t <= hi)
    bagel_latents, bagel_first_v = latents[0][0], flows[first_guided]

    chat = Chat(assets, seed=11, max_parts=1)
    images = inputs[:-1]
    chat.add_user(inputs[-1], images=images)
    noise = torch.randn(
        6, assets.model.config.latent_dim, generator=torch.Generator().manual_seed(11)
    )
    first_v = _recorder(monkeypatch, sys.modules["train.infer.flow"], "guide")
    ours = generate_latents(chat.ctx, (2, 3), noise, opts)
    assert float((first_v[0] - bagel_first_v).abs().max()) < TOL
    assert float((ours - bagel_latents).abs().max()) < TOL
    print(f"{case}: first-step velocity {float((first_v[0] - bagel_first_v).abs().max()):.2e}, "
          f"final latents {float((ours - bagel_latents).abs().max()):.2e}")  # fmt: skip

    # the whole session path: the same noise (the seed's first draw), the same picture
    session = Chat(assets, seed=11, max_parts=1)
    got = session.send(inputs[-1], images=images, mode="image", image=opts).images[0]
    diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(picture, dtype=np.int16))
    assert got.size == picture.size and diff.max() <= 1


def test_text_generation_matches_bagel(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    assets, inferencer = pair
    model = inferencer.model
    sp = assets.tokenizer.special
    logits: list = []
    hook = model.language_model.lm_head.register_forward_hook(lambda m, i, o: logits.append(o))
    ids_calls = _recorder(monkeypatch, model, "generate_text")
    try:
        with torch.no_grad():
            context = inferencer.init_gen_context()
            context = inferencer.update_context_image(_photo(), context, vae=True, vit=True)
            context = inferencer.update_context_text("what is in the picture?", context)
            text = inferencer.gen_text(context, max_length=13, do_sample=False)
    finally:
        hook.remove()
    bagel_ids = ids_calls[0][:, 0].tolist()
    assert bagel_ids[0] == sp.im_start

    chat = Chat(assets, max_parts=1)
    chat.add_user("what is in the picture?", images=[_photo()])
    chat.ctx.mark_text_condition()
    chat.ctx.add_tokens([sp.im_start])
    first = chat.ctx.next_logits()
    assert float((first - logits[0][0]).abs().max()) < TOL
    chat2 = Chat(assets, max_parts=1)
    chat2.add_user("what is in the picture?", images=[_photo()])
    chat2.ctx.mark_text_condition()
    ids = generate_text_part(
        chat2.ctx, sp.im_start, sp.im_end, TextOptions(max_tokens=12), torch.Generator()
    )
    assert ids == bagel_ids[1:]
    print(
        f"text: {len(ids)} ids equal, first-step logits {float((first - logits[0][0]).abs().max()):.2e}"
    )
    reply = Chat(assets, max_parts=1, text=TextOptions(max_tokens=12)).send(
        "what is in the picture?", images=[_photo()], mode="text"
    )
    assert reply.text == assets.tokenizer.decode(ids) == text


def test_think_mode_matches_bagel(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's ids and first logits equal BAGEL's. BAGEL then re-tokenizes the decoded plan
    before drawing, where chatumm keeps the generated ids, so the drawing is compared on BAGEL's
    context: the system prompt in the full and text-only streams, the re-encoded plan in the full
    stream alone; and the session's own think path is the same composition over its ids."""
    assets, inferencer = pair
    model, tok, sp = inferencer.model, assets.tokenizer, assets.tokenizer.special
    opts = ImageOptions(steps=STEPS, size=(48, 32))
    plans = _recorder(monkeypatch, model, "generate_text")
    latents = _recorder(monkeypatch, model, "generate_image")
    torch.manual_seed(5)
    with torch.no_grad():
        plan, _ = inferencer.interleave_inference(
            ["a red fox in the snow"], think=True, max_think_token_n=7, do_sample=False,
            image_shapes=(32, 48), **_bagel_hyper(opts),
        )  # fmt: skip
    bagel_plan_ids = plans[0][1:, 0].tolist()

    chat = Chat(assets, seed=5, think=True, max_parts=1, text=TextOptions(max_tokens=6))
    reply = chat.send("a red fox in the snow", mode="image", image=opts)
    ours_plan, _ = reply.turn.parts
    assert ours_plan.text == plan

    def prompted() -> Chat:
        session = Chat(assets, seed=5, think=True)
        session.add_user("a red fox in the snow")
        return session

    def planned(ids: list[int]) -> Chat:
        session = prompted()
        session.ctx.add_tokens([sp.im_start, *ids, sp.im_end], text_only=False)
        return session

    noise = torch.randn(
        6, assets.model.config.latent_dim, generator=torch.Generator().manual_seed(5)
    )
    ids = generate_text_part(
        prompted().ctx, sp.im_start, sp.im_end, TextOptions(max_tokens=6), torch.Generator()
    )
    assert ids == bagel_plan_ids
    on_bagels_context = generate_latents(planned(tok.encode(plan)).ctx, (2, 3), noise, opts)
    assert float((on_bagels_context - latents[0][0]).abs().max()) < TOL
    own = generate_latents(planned(ids).ctx, (2, 3), noise, opts)
    session_picture = reply.images[0]
    from train.infer.session import to_pil

    expected = to_pil(assets.model.decode_latent_tokens(own, 2, 3))
    assert np.array_equal(np.asarray(session_picture), np.asarray(expected))
    print(f"think: {len(ids)} plan ids equal, latents on BAGEL's context "
          f"{float((on_bagels_context - latents[0][0]).abs().max()):.2e}")  # fmt: skip
