"""Inference speed of a ChatUMM session (random weights): images, text, and the KV cache's gain.

    python bench/bench_infer.py --preset tiny                                   # CPU, fp32
    python bench/bench_infer.py --preset base_1b --size 128                     # CPU, ~1B
    python bench/bench_infer.py --preset bagel_7b --device cuda --dtype bf16 \\
        --size 1024 --steps 50 --naive-steps 2                                  # gpu_infer.sh

A two-turn session is timed as a user meets it (``train.infer.Chat``):

1. user text -> a text-to-image answer (BAGEL's defaults: text guidance in [0.4, 1], 2 branches)
2. user upload + text -> an edit (image guidance too, in [0, 1]: 3 branches per step)
3. user text -> a text answer of ``--text-tokens`` greedy tokens (after the edit's history)

``steps`` counts schedule points as BAGEL's ``num_timesteps`` (steps - 1 velocity evaluations).
The naive baselines recompute the whole context for every denoising step and every text token
(the images' VAE latents and ViT patches are kept; the LLM and ViT re-run), over
``--naive-steps`` steps / tokens, and are compared per step / per token. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.data import Transforms, default_tokenizer_path, load_tokenizer
from train.infer import Assets, Chat, ImageOptions, TextOptions
from train.infer.context import Context
from train.infer.flow import generate_latents
from train.infer.load import bagel_data_config, prepare_model
from train.infer.text import choose_token
from train.model import ChatUMM, ModelConfig

PROMPT = (
    "a red fox sitting in deep snow at the edge of a pine forest, early morning light, soft "
    "shadows, the breath of the fox visible in the cold air, photographed with a long lens"
)


def build_assets(preset: str, device: torch.device, dtype: torch.dtype) -> Assets:
    cfg = ModelConfig.preset(preset)
    with torch.device("meta"):
        model = ChatUMM(cfg)
        for param in model.parameters():  # allocate the weights in their dtype (7B: 28 GB in bf16)
            param.data = param.data.to(dtype)
    model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        model.init_weights()
        torch.nn.init.normal_(model.llm2vae.weight, std=0.02)  # a non-zero velocity head
    tokenizer = load_tokenizer(default_tokenizer_path())
    transforms = Transforms.from_config(bagel_data_config(cfg))
    return Assets(prepare_model(model, device, dtype), tokenizer, transforms, Path(preset))


class Recording:
    """The context operations of a session, to replay them on a fresh context (the naive run)."""

    def __init__(self, ctx: Context) -> None:
        self.ops: list[tuple[str, Any]] = []
        for name in ("add_tokens", "add_image", "mark_text_condition"):
            original = getattr(ctx, name)
            setattr(ctx, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Any) -> Any:
        def recorded(*args: Any) -> Any:
            self.ops.append((name, args))
            return original(*args)

        return recorded

    def replay(self, assets: Assets, upto: int | None = None) -> Context:
        sp = assets.tokenizer.special
        ctx = Context(assets.model, (sp.vision_start, sp.vision_end))
        for name, args in self.ops[:upto]:
            getattr(ctx, name)(*args)
        return ctx


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return out, time.perf_counter() - start


def naive_image_step(
    rec: Recording, assets: Assets, grid: tuple[int, int], x: torch.Tensor
) -> None:
    """One denoising step without the cache: every branch's context recomputed, then queried."""
    ctx = rec.replay(assets)
    branches = [ctx.full_branch(), ctx.text_cfg, ctx.image_cfg_branch()]
    ctx.query(grid, branches).velocity(x, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--naive-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    assets, load_s = timed(device, build_assets, args.preset, device, dtype)
    size = args.size or assets.transforms.vae.cfg.max_side
    stride = assets.model.config.image_stride
    grid = (size // stride, size // stride)
    opts = {"steps": args.steps, "size": (size, size)}
    chat = Chat(assets, seed=0, max_parts=1, text=TextOptions(max_tokens=args.text_tokens))
    rec = Recording(chat.ctx)
    result: dict[str, Any] = {
        "preset": args.preset, "device": str(device), "dtype": args.dtype,
        "threads": torch.get_num_threads(), "image_px": size, "latent_tokens": grid[0] * grid[1],
        "steps": args.steps, "load_s": round(load_s, 2),
    }  # fmt: skip
    with torch.no_grad():
        # 1. text to image
        _, prefill_s = timed(device, chat.add_user, PROMPT)
        reply, t2i_s = timed(device, chat.reply, mode="image", image=ImageOptions(**opts))
        # 2. an edit of an upload (3 branches)
        upload = Image.new("RGB", (size, size), (120, 60, 30))
        _, upload_s = timed(
            device, chat.add_user, "now make it night and add falling snow", [upload]
        )
        edit_opts = ImageOptions.edit().with_overrides(opts)
        _, edit_s = timed(device, chat.reply, mode="image", image=edit_opts)
        noise = torch.randn(grid[0] * grid[1], assets.model.config.latent_dim)
        chat.add_user("now make it night and add falling snow")  # the context of the next edit
        _, denoise_s = timed(device, generate_latents, chat.ctx, grid, noise, edit_opts)
        cached_step_s = denoise_s / (args.steps - 1)
        x = noise.to(device)
        _, naive_s = timed(
            device,
            lambda: [naive_image_step(rec, assets, grid, x) for _ in range(args.naive_steps)],
        )
        naive_step_s = naive_s / args.naive_steps
        # 3. text: an answer to that last user turn
        history = len(rec.ops)
        greedy = TextOptions()
        sp = assets.tokenizer.special
        gen = torch.Generator()

        def decode(n: int) -> None:
            chat.ctx.add_tokens([sp.im_start])
            for _ in range(n):  # no stop token: a fixed count of tokens
                chat.ctx.add_tokens([choose_token(chat.ctx.next_logits(), greedy, gen)])

        _, text_s = timed(device, decode, args.text_tokens)

        def naive_decode(n: int) -> None:
            ids: list[int] = []
            for _ in range(n):
                ctx = rec.replay(assets, upto=history)
                ctx.add_tokens([sp.im_start, *ids])
                ids.append(choose_token(ctx.next_logits(), greedy, gen))

        _, naive_text_s = timed(device, naive_decode, args.naive_steps)
    context_tokens = chat.ctx.cache.length
    result.update(
        prefill_prompt_s=round(prefill_s, 3),
        t2i_image_s=round(t2i_s, 3),
        upload_s=round(upload_s, 3),
        edit_image_s=round(edit_s, 3),
        edit_step_s=round(cached_step_s, 4),
        naive_edit_step_s=round(naive_step_s, 4),
        image_speedup_vs_naive=round(naive_step_s / cached_step_s, 2),
        text_tokens_per_s=round(args.text_tokens / text_s, 2),
        naive_text_tokens_per_s=round(args.naive_steps / naive_text_s, 2),
        text_speedup_vs_naive=round(
            (args.text_tokens / text_s) / (args.naive_steps / naive_text_s), 2
        ),
        context_tokens=context_tokens,
        cache_mib=round(chat.ctx.cache.nbytes() / 2**20, 1),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if device.type == "cuda":
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["gpu"] = torch.cuda.get_device_name()
    assert reply.images  # the session drew
    print(json.dumps(result))


if __name__ == "__main__":
    main()
