"""Graphs compiled per training step with ``parallel.compile`` (inductor), on real packs.

    python bench/bench_compile.py --steps 12            # tiny preset, CPU

Builds the tiny model, compiles its blocks as training does (``train.parallelize.apply_compile``)
and runs forward+backward on packs from the real loader (stage-c-shaped shards, the tiny data
config): every pack has its own length, expert row counts and ViT patch count. Prints one JSON
line: Dynamo's compiled-graph count after each step (``compiles_per_step``), the real tokens of
each pack and the seconds of each step. Only train.parallelize's public functions are used, so
the same file measures an older tree: run it from that tree's bench/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.train_fixtures import write_stage_c_shards
from train.config import TrainConfig
from train.data import PackedLoader, default_tokenizer_path, load_tokenizer
from train.model import ChatUMM
from train.parallelize import apply_compile
from train.resolve import resolve_data_config, resolve_model_config


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train_cfg = TrainConfig.model_validate({"data": {"overrides": {"pack_tokens": 512}}})
    cfg = resolve_model_config(train_cfg, None, None)
    data_cfg = resolve_data_config(train_cfg, cfg)
    torch.manual_seed(0)
    model = ChatUMM(cfg).train()
    apply_compile(model)
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_stage_c_shards(Path(tmp) / "shards", samples=24)
        loader = PackedLoader([shards], data_cfg, load_tokenizer(default_tokenizer_path()))
        packs = iter(loader)
        graphs, tokens, seconds = [], [], []
        for _ in range(args.steps):
            batch = next(packs)
            start = time.perf_counter()
            terms = model(batch)
            (terms.ce_sum + terms.mse_sum).backward()
            model.zero_grad(set_to_none=True)
            seconds.append(round(time.perf_counter() - start, 2))
            graphs.append(int(counters["stats"]["unique_graphs"]))
            tokens.append(batch.real_tokens)
    per_step = [b - a for a, b in zip([0, *graphs], graphs, strict=False)]
    result = {
        "steps": args.steps, "compiles_per_step": per_step,
        "compiles_after_step_1": sum(per_step[1:]), "real_tokens": tokens, "step_s": seconds,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
