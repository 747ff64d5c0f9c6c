"""CPU microbenchmark of the MoT decoder's expert routing: forward+backward of the decoder layers
alone (no embeddings, no LM head) on one pack, rows in sequence order or grouped by expert.

    python bench/bench_routing.py --preset small_100m --tokens 4096 --layers 2 --mode sorted
    python bench/bench_routing.py ... --mode sequence     # rows in sequence order (gathered)

The pack is bench_model's synthetic one (edit-like dialogues: text, a ViT image, a noised and a
clean latent image; about 63% generation-expert tokens at the default sizes), without padding,
so only the routing differs between the modes: ``sequence`` hands the decoder the rows in
sequence order (each expert gathers its rows and the outputs are put back), ``sorted`` hands
it the rows grouped by expert with the mask permuted alike (what training does since
``train.model.layout``). It uses only the decoder's public call (``MoTDecoder(x, routing,
positions, mask)``), so the same file times an older tree: run it from that tree's bench/.
Prints one JSON line: the median and the range of ``--repeats`` timed steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_model import synthetic_batch

from train.mask import dense_mask, generalized_causal_mask_mod
from train.model import ModelConfig
from train.model.attention import AttentionMask
from train.model.llm import ExpertRouting, MoTDecoder


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="small_100m")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--mode", choices=["sequence", "sorted"], default="sorted")
    ap.add_argument("--vit-side", type=int, default=16, help="ViT patches per image side")
    ap.add_argument("--latent-side", type=int, default=24, help="latent tokens per image side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = ModelConfig.preset(args.preset)
    sides = (args.vit_side, args.latent_side)
    fitted = synthetic_batch(cfg, args.tokens, *sides).real_tokens
    batch = synthetic_batch(cfg, fitted, *sides)  # the same dialogues, no padding
    n = batch.seq_len
    expert_ids = batch.expert_ids_L
    mask_LL = dense_mask(
        generalized_causal_mask_mod(batch.document_ids_L, batch.segment_ids_L, batch.noised_L), n
    )
    order = torch.argsort(expert_ids, stable=True) if args.mode == "sorted" else torch.arange(n)
    mask = AttentionMask("sdpa", n, dense_LL=mask_LL[order][:, order].contiguous())
    routing = ExpertRouting.from_expert_ids(expert_ids[order])
    positions = batch.position_ids_L[order]

    torch.manual_seed(0)
    llm = replace(cfg.llm, num_layers=args.layers)
    decoder = MoTDecoder(llm)
    for p in decoder.parameters():
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(n, llm.hidden_size, requires_grad=True)
    grad = torch.randn(n, llm.hidden_size)

    def step() -> float:
        start = time.perf_counter()
        out = decoder(x, routing, positions, mask)
        out.backward(grad)
        decoder.zero_grad(set_to_none=True)
        x.grad = None
        return time.perf_counter() - start

    step()  # warm-up
    times = [step() for _ in range(args.repeats)]
    result = {
        "preset": args.preset, "layers": args.layers, "mode": args.mode, "tokens": n,
        "generation_tokens": int(expert_ids.sum()), "threads": args.threads,
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4), "max_s": round(max(times), 4),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
