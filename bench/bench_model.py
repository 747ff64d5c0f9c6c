"""Forward+backward throughput, MFU and peak memory of ChatUMM on one synthetic packed sequence.

    python bench/bench_model.py --preset tiny --tokens 1024                 # CPU, SDPA, fp32
    python bench/bench_model.py --preset small_100m --tokens 4096           # CPU
    python bench/bench_model.py --preset tiny --tokens 1024 --pad-to 2048   # half padding
    python bench/bench_model.py --preset base_1b --tokens 32768 --device cuda \\
        --attention flex --dtype bf16 --compile-layers                      # H100 (gpu_model.sh)

The sequence is packed BAGEL-style from edit-like dialogues: user text, a ViT image, assistant
text (CE), a noised VAE image (MSE) and its clean copy, more assistant text (CE). One JSON line
is printed. MFU counts the trainable model's matmul and attention FLOPs (6 x params x tokens for
each token's own expert, attention over the mask's allowed (q, k) pairs, the ViT on its patches,
the LM head on CE tokens); the frozen VAE encode is timed but not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.batch import PackedBatch
from train.mask import generalized_causal_mask_mod
from train.model import ChatUMM, ModelConfig
from train.parallelize import apply_activation_checkpointing, apply_compile

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def synthetic_batch(
    cfg: ModelConfig, capacity: int, vit_side: int, latent_side: int
) -> PackedBatch:
    """Pack edit-like dialogues until ``capacity`` is full (following ``train/batch.py``)."""
    gen = torch.Generator().manual_seed(0)
    dialogue = [("text", 96), ("vit", vit_side**2), ("ce", 192), ("noised", latent_side**2),
                ("clean", latent_side**2), ("ce", 128)]  # fmt: skip
    used, docs = 0, []
    while True:
        size = sum(n + 2 for _, n in dialogue)
        if used + size > capacity:
            break
        docs.append(dialogue)
        used += size
    if not docs:
        raise ValueError(f"--tokens {capacity} is smaller than one dialogue")
    cols: dict[str, list[int]] = {k: [] for k in ("pos", "expert", "doc", "seg", "noised", "kind")}
    ce_index, vit_index, vae_index, text_index = [], [], [], []
    n_seg = 0
    for d, blocks in enumerate(docs):
        pos = 0
        for kind, n in blocks:
            image = kind in ("vit", "noised", "clean")
            start = len(cols["pos"])
            for j in range(n + 2):
                inner = image and 0 < j < n + 1
                cols["pos"].append(pos if image else pos + j)
                cols["expert"].append(1 if inner and kind != "vit" else 0)
                cols["doc"].append(d)
                cols["seg"].append(n_seg if image else -1)
                cols["noised"].append(int(kind == "noised"))
                (
                    vit_index if inner and kind == "vit" else vae_index if inner else text_index
                ).append(start + j)
            if kind == "ce":
                ce_index.extend(range(start, start + n + 2))
            n_seg += image
            pos += 0 if kind == "noised" else (1 if image else n + 2)
    pad = capacity - len(cols["pos"])
    for name, value in (("pos", 0), ("expert", 0), ("doc", -1), ("seg", -1), ("noised", 0)):
        cols[name].extend([value] * pad)
    text_index.extend(range(used, capacity))
    p, stride = cfg.vit.patch_size, cfg.image_stride
    n_docs = len(docs)
    vit_ids = (
        torch.arange(vit_side)[:, None] * cfg.vit.max_patches_per_side + torch.arange(vit_side)
    ).flatten()
    lat_ids = (
        torch.arange(latent_side)[:, None] * cfg.max_latent_size + torch.arange(latent_side)
    ).flatten()
    image = torch.rand(3, latent_side * stride, latent_side * stride, generator=gen) * 2 - 1
    return PackedBatch(
        position_ids_L=torch.tensor(cols["pos"]),
        expert_ids_L=torch.tensor(cols["expert"]),
        document_ids_L=torch.tensor(cols["doc"], dtype=torch.int32),
        segment_ids_L=torch.tensor(cols["seg"], dtype=torch.int32),
        noised_L=torch.tensor(cols["noised"], dtype=torch.bool),
        text_ids_N=torch.randint(0, cfg.llm.vocab_size, (len(text_index),), generator=gen),
        text_index_N=torch.tensor(text_index),
        ce_index_C=torch.tensor(ce_index),
        ce_labels_C=torch.randint(0, cfg.llm.vocab_size, (len(ce_index),), generator=gen),
        vit_patches_PD=torch.rand(len(vit_index), p * p * 3, generator=gen) * 2 - 1,
        vit_position_ids_P=vit_ids.repeat(n_docs),
        vit_seqlens_V=torch.full((n_docs,), vit_side**2, dtype=torch.int32),
        vit_index_P=torch.tensor(vit_index),
        vae_images=[image.clone() for _ in range(2 * n_docs)],
        latent_position_ids_M=lat_ids.repeat(2 * n_docs),
        vae_index_M=torch.tensor(vae_index),
        timestep_logits_I=torch.tensor([0.0, float("-inf")] * n_docs),
        sample_lens=[sum(n + 2 for _, n in blocks) for blocks in docs],
        tasks=["bench"] * n_docs,
    )


def pad_to(batch: PackedBatch, capacity: int, pad_id: int = 0) -> PackedBatch:
    """``batch`` with padding appended up to ``capacity`` positions, as ``train.data.pack`` pads:
    document -1, segment -1, understanding expert, position 0, text ``pad_id``."""
    extra = capacity - batch.seq_len
    if extra < 0:
        raise ValueError(f"--pad-to {capacity} is shorter than the pack ({batch.seq_len})")

    def grow(t: torch.Tensor, value: float | int | bool) -> torch.Tensor:
        return torch.cat([t, torch.full((extra,), value, dtype=t.dtype)])

    return replace(
        batch,
        position_ids_L=grow(batch.position_ids_L, 0),
        expert_ids_L=grow(batch.expert_ids_L, 0),
        document_ids_L=grow(batch.document_ids_L, -1),
        segment_ids_L=grow(batch.segment_ids_L, -1),
        noised_L=grow(batch.noised_L, False),
        text_ids_N=grow(batch.text_ids_N, pad_id),
        text_index_N=torch.cat([batch.text_index_N, torch.arange(batch.seq_len, capacity)]),
    )


def attention_pairs(batch: PackedBatch, device: torch.device, chunk: int = 2048) -> int:
    """Allowed (q, k) pairs of the generalized causal mask over the real tokens."""
    mask_mod = generalized_causal_mask_mod(
        batch.document_ids_L, batch.segment_ids_L, batch.noised_L
    )
    k = torch.arange(batch.real_tokens, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for start in range(0, batch.real_tokens, chunk):
        q = torch.arange(start, min(start + chunk, batch.real_tokens), device=device)[:, None]
        total += int(mask_mod(zero, zero, q, k).sum())
    return total


def model_flops(cfg: ModelConfig, batch: PackedBatch, pairs: int) -> float:
    """Forward+backward FLOPs (3x forward) of the trainable model on this batch."""
    llm, vit = cfg.llm, cfg.vit
    dh = llm.head_dim
    expert = (
        llm.hidden_size * dh * (2 * llm.num_heads + 2 * llm.num_kv_heads)
        + 3 * llm.hidden_size * llm.intermediate_size
    )
    tokens = batch.real_tokens
    fwd = 2 * tokens * expert * llm.num_layers + 4 * pairs * llm.num_heads * dh * llm.num_layers
    fwd += 2 * batch.ce_index_C.numel() * llm.hidden_size * llm.vocab_size
    fwd += 2 * batch.vae_index_M.numel() * 2 * llm.hidden_size * cfg.latent_dim
    vit_layer = 4 * vit.hidden_size**2 + 2 * vit.hidden_size * vit.intermediate_size
    patches = batch.vit_patches_PD.shape[0]
    vit_pairs = int((batch.vit_seqlens_V.long() ** 2).sum())
    fwd += (
        2 * patches * vit_layer * vit.num_layers + 4 * vit_pairs * vit.hidden_size * vit.num_layers
    )
    fwd += (
        2
        * patches
        * (
            vit.patch_size**2 * 3 * vit.hidden_size
            + vit.hidden_size * llm.hidden_size
            + llm.hidden_size**2
        )
    )
    return 3.0 * fwd


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", type=int, default=1024, help="pack dialogues up to this length")
    ap.add_argument("--pad-to", type=int, default=None, help="then pad the pack to this length")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attention", choices=["sdpa", "flex"], default="sdpa")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--vit-side", type=int, default=None, help="ViT patches per image side")
    ap.add_argument("--latent-side", type=int, default=None, help="latent tokens per image side")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile-layers", action="store_true", help="torch.compile each block")
    ap.add_argument(
        "--ac",
        choices=["off", "full", "selective"],
        default="off",
        help="activation checkpointing per block, as parallel.activation_checkpointing",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak, for MFU")
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig.preset(args.preset)
    big = cfg.vit.patch_size >= 14
    vit_side = args.vit_side or (27 if big else 4)
    latent_side = args.latent_side or (32 if big else 2)
    batch = synthetic_batch(cfg, args.tokens, vit_side, latent_side)
    batch = pad_to(batch, args.pad_to or batch.seq_len).to(device)
    pairs = attention_pairs(batch, device)

    torch.manual_seed(0)
    with torch.device("meta"):
        model = ChatUMM(cfg)
    model.to_empty(device=device)
    model.init_weights()
    if args.dtype == "bf16":  # bf16 parameters (as FSDP's param_dtype); the frozen VAE stays fp32
        for name, child in model.named_children():
            if name != "vae":
                child.to(torch.bfloat16)
    if args.ac != "off":
        apply_activation_checkpointing(model, args.ac)
    if args.compile_layers:  # as training compiles (train.parallelize)
        apply_compile(model)
    model.train()

    def step() -> None:
        terms = model(batch, attention=args.attention)
        loss = terms.ce_sum / terms.ce_tokens.clamp(min=1) + terms.mse_sum / terms.mse_tokens.clamp(
            min=1
        )
        loss.backward()
        model.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    graphs = counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    recompiles = counters["stats"]["unique_graphs"] - graphs

    flops = model_flops(cfg, batch, pairs)
    result = {
        "preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "attention": args.attention, "dtype": args.dtype, "ac": args.ac,
        "compile": "layers" if args.compile_layers else "off", "compiles_after_warmup": recompiles,
        "threads": torch.get_num_threads(), "seq_len": batch.seq_len, "real_tokens": batch.real_tokens,
        "vit_patches": batch.vit_patches_PD.shape[0], "latent_tokens": batch.vae_index_M.numel(),
        "vae_images": len(batch.vae_images), "ce_tokens": batch.ce_index_C.numel(),
        "params_trainable_M": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1),
        "step_s": round(seconds, 4), "tokens_per_s": round(batch.real_tokens / seconds, 1),
        "model_tflops_per_step": round(flops / 1e12, 3), "achieved_tflops": round(flops / seconds / 1e12, 2),
    }  # fmt: skip
    if device.type == "cuda":
        result["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            result["mfu"] = round(flops / seconds / (peak * 1e12), 4)
    else:
        result["peak_rss_GiB"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
