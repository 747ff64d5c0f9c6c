"""The KV-cached context against from-scratch forwards (tiny ChatUMM, random weights, CPU).

The reference is training's own path: the dialogue serialized by ``train.data`` and run by
``ChatUMM.hidden_states`` in one forward. The cached session must give the same logits at every
context token and the same velocity at the final noised image, to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.contract import Part, Turn
from tests.builders import build_sample, png_bytes
from tests.infer_support import tiny_assets
from tests.model_batches import one_torch_thread  # noqa: F401
from train.data import pack, serialize_dialogue
from train.infer import Chat
from train.infer.cache import KVCache
from train.infer.context import Context

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def assets():
    return tiny_assets()


def _record_forwards(ctx: Context) -> list[torch.Tensor]:
    """The hidden states of every committed forward of ``ctx``, in order."""
    recorded: list[torch.Tensor] = []
    forward = ctx.forward

    def recording(layout, x_TD, commit):
        hidden_TD = forward(layout, x_TD, commit)
        if commit:
            recorded.append(hidden_TD)
        return hidden_TD

    ctx.forward = recording  # type: ignore[method-assign]
    return recorded


@pytest.mark.parametrize("task", ["ti_ti_i1_n", "t_ti_t1_1"])
def test_cached_dialogue_equals_the_training_forward(assets, task: str) -> None:
    sample = build_sample(task, seed=3)
    model = assets.model
    dialogue = serialize_dialogue(
        sample, assets.tokenizer, assets.transforms, np.random.default_rng(0)
    )
    batch = pack([dialogue])
    torch.manual_seed(0)
    with torch.no_grad():
        hidden_LD, latents = model.hidden_states(batch)

    chat = Chat(assets)
    recorded = _record_forwards(chat.ctx)
    chat.load(sample)  # the history up to the final user turn

    # the intent: the user's last token predicts the answer's first token
    noised = next(
        b for b in dialogue.blocks if b.kind == "vae_noised" and b.turn == len(sample.turns) - 1
    )
    expected_logits = model.llm.lm_head(hidden_LD[noised.start - 1])
    torch.testing.assert_close(chat.ctx.next_logits(), expected_logits, **TOL)

    # the velocity of the answer's noised image at training's (x_t, t)
    vae_blocks = [b for b in dialogue.blocks if b.kind in ("vae_noised", "vae_clean")]
    image = vae_blocks.index(noised)
    rows_M = latents.image_M == image
    t = latents.t_I[image]
    x_t = (1 - t) * latents.clean_MC[rows_M] + t * latents.noise_MC[rows_M]
    expected_v = model.llm2vae(hidden_LD[batch.vae_index_M[rows_M]])
    query = chat.ctx.query(noised.grid, [chat.ctx.full_branch()])
    torch.testing.assert_close(query.velocity(x_t, float(t))[0], expected_v, **TOL)

    # the answer teacher-forced: every cached token equals training's, noised blocks aside
    chat.add_turn(sample.turns[-1], sample.images)
    cached_TD = torch.cat(recorded)
    expected_TD = hidden_LD[~batch.noised_L]
    assert cached_TD.shape == expected_TD.shape  # each token ran exactly once
    assert chat.ctx.cache.length == cached_TD.shape[0]
    torch.testing.assert_close(cached_TD, expected_TD, **TOL)
    torch.testing.assert_close(model.llm.lm_head(cached_TD), model.llm.lm_head(expected_TD), **TOL)


def _upload(seed: int) -> bytes:
    return png_bytes(seed, size=(40, 30))


def _history(assets, with_last_text: bool) -> Chat:
    """[upload, "A"] -> [image] -> ["B"] (or without "B")."""
    chat = Chat(assets)
    images = [_record(_upload(1)), _record(_upload(2))]
    chat.add_turn(
        Turn(role="user", parts=(Part.of_image(0, "upload"), Part.of_text("a cat on a mat"))),
        images,
    )
    chat.add_turn(Turn(role="assistant", parts=(Part.of_image(1, "output"),)), images)
    if with_last_text:
        chat.add_user("now make it snow")
    return chat


def _record(data: bytes):
    from synth.contract import ImageRecord

    return ImageRecord(data=data, source="test", source_row="0")


def test_guidance_branches_equal_contexts_built_from_scratch(assets) -> None:
    """Text CFG = the dialogue without its last text; image CFG = its text parts alone, RoPE
    ids renumbered; the three branches batched = each branch alone."""
    chat = _history(assets, with_last_text=True)
    ctx = chat.ctx
    branches = [ctx.full_branch(), ctx.text_cfg, ctx.image_cfg_branch()]
    grid = (2, 3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, model_latent_dim(assets), generator=gen)
    batched = ctx.query(grid, branches).velocity(x, 0.7)
    for i, branch in enumerate(branches):
        alone = ctx.query(grid, [branch]).velocity(x, 0.7)[0]
        torch.testing.assert_close(batched[i], alone, **TOL)

    without_last = _history(assets, with_last_text=False)
    reference = without_last.ctx.query(grid, [without_last.ctx.full_branch()]).velocity(x, 0.7)
    torch.testing.assert_close(batched[1], reference[0], **TOL)

    sp, tok = assets.tokenizer.special, assets.tokenizer
    texts_only = Context(assets.model, (sp.vision_start, sp.vision_end))
    texts_only.add_tokens([sp.im_start, *tok.encode("a cat on a mat"), sp.im_end])
    texts_only.add_tokens([sp.end_of_turn])
    texts_only.add_tokens([sp.im_start, *tok.encode("now make it snow"), sp.im_end])
    reference = texts_only.query(grid, [texts_only.full_branch()]).velocity(x, 0.7)
    torch.testing.assert_close(batched[2], reference[0], **TOL)
    assert not torch.allclose(batched[0], batched[1]) and not torch.allclose(batched[0], batched[2])


def model_latent_dim(assets) -> int:
    return assets.model.config.latent_dim


def test_an_upload_keeps_the_image_in_the_text_cfg_branch(assets) -> None:
    """BAGEL's rule: the text-CFG context is refreshed after every image, so with the upload
    after the text it equals the full context."""
    chat = Chat(assets)
    chat.add_turn(
        Turn(role="user", parts=(Part.of_text("edit this"), Part.of_image(0, "upload"))),
        [_record(_upload(3))],
    )
    assert chat.ctx.text_cfg == chat.ctx.full_branch()


def test_the_cache_grows_without_losing_what_it_holds(assets) -> None:
    cfg = assets.model.config.llm
    cache = KVCache(cfg, torch.float32, torch.device("cpu"), capacity=4)
    first = torch.randn(3, cfg.num_kv_heads, cfg.head_dim)
    keys, _ = cache.views(3)[0].extend(first, first)
    cache.commit(torch.zeros(3, dtype=torch.long))
    second = torch.randn(5, cfg.num_kv_heads, cfg.head_dim)
    views = cache.views(5)
    assert cache.capacity == 8
    keys, _values = views[0].extend(second, second)
    torch.testing.assert_close(keys, torch.cat([first, second]), rtol=0, atol=0)
    cache.commit(torch.ones(5, dtype=torch.long))
    assert cache.length == 8 and cache.stream_N.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
