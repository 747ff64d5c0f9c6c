"""Executed FLOPs of one training step (forward + backward), and what padding costs of them.

    python bench/bench_flops.py --preset tiny --tokens 1024 --pad-to 2048
    python bench/bench_flops.py --preset small_100m --tokens 4096 --pad-to 4608 \
        --vit-side 16 --latent-side 24

Counts what really runs, not a formula: ``torch.utils.flop_counter`` over every matmul and
attention kernel of a real forward+backward on CPU (the dense SDPA kernel included, which
computes every (query, key) pair it is given, masked or not). The same dialogues (bench_model's
synthetic pack) run twice, padded to ``--pad-to`` and unpadded; the difference is the cost of
padding. Grouped by part: ``decoder`` (the MoT layers and final norms), ``lm_head``, ``vit`` (ViT
and connector), ``other`` (the frozen VAE encoder, the embedders, the velocity head), and across
them ``attention`` (the attention kernels of decoder and ViT) and ``total``. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.utils.flop_counter as fc
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_model import pad_to, synthetic_batch

from train.batch import PackedBatch
from train.model import ChatUMM, ModelConfig

_aten = torch.ops.aten
_ATTENTION = ("_scaled_dot_product", "flex_attention")


def _cpu_sdpa(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return fc.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return fc.sdpa_backward_flop_count(grad_out, query, key, value)


# The CPU flash kernel the dense-mask path runs has no formula in torch's table; it is the
# same computation as the CUDA flash kernel.
CPU_SDPA = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def executed_flops(model: ChatUMM, batch: PackedBatch, attention: str = "sdpa") -> dict[str, int]:
    """FLOPs one forward+backward of ``model`` on ``batch`` executes, by part (gradients are
    left on the model; the RNG is seeded, so the same batch draws the same noise)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        torch.manual_seed(0)
        terms = model(batch, attention=attention)
        (terms.ce_sum + terms.mse_sum).backward()
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    every_op = counter.get_flop_counts()["Global"]
    root = type(model).__name__
    decoder = re.compile(rf"{root}\.llm\.(layers|norms)\.\d+")
    parts = {
        "decoder": sum(n for name, n in by_module.items() if decoder.fullmatch(name)),
        "lm_head": by_module.get(f"{root}.llm.lm_head", 0),
        "vit": by_module.get(f"{root}.vit", 0) + by_module.get(f"{root}.connector", 0),
    }
    total = counter.get_total_flops()
    return {
        **parts,
        "other": total - sum(parts.values()),
        "attention": sum(n for op, n in every_op.items() if str(op).startswith(_ATTENTION, 5)),
        "total": total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", type=int, default=1024, help="pack dialogues up to this length")
    ap.add_argument("--pad-to", type=int, default=2048, help="then pad the pack to this length")
    ap.add_argument("--vit-side", type=int, default=None, help="ViT patches per image side")
    ap.add_argument("--latent-side", type=int, default=None, help="latent tokens per image side")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ModelConfig.preset(args.preset)
    big = cfg.vit.patch_size >= 14  # bench_model's defaults
    sides = (args.vit_side or (27 if big else 4), args.latent_side or (32 if big else 2))
    fitted = synthetic_batch(cfg, args.tokens, *sides).real_tokens
    unpadded = synthetic_batch(cfg, fitted, *sides)  # the same dialogues, no padding at all
    padded = pad_to(unpadded, args.pad_to)
    torch.manual_seed(0)
    model = ChatUMM(cfg).train()
    counts = {
        name: executed_flops(model, batch)
        for name, batch in (("padded", padded), ("unpadded", unpadded))
    }
    padding = {k: counts["padded"][k] - counts["unpadded"][k] for k in counts["padded"]}
    result = {
        "preset": args.preset, "real_tokens": unpadded.real_tokens, "seq_len": padded.seq_len,
        "gflops_padded": {k: round(v / 1e9, 4) for k, v in counts["padded"].items()},
        "gflops_unpadded": {k: round(v / 1e9, 4) for k, v in counts["unpadded"].items()},
        "padding_gflops": {k: round(v / 1e9, 4) for k, v in padding.items()},
        "padding_share_of_total": round(padding["total"] / counts["padded"]["total"], 4),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
