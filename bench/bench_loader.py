"""Loader throughput against the training step: can the data path keep a rank fed?

    python bench/bench_loader.py                                   # gpu_1b.yaml's data path
    python bench/bench_loader.py --metrics RUN/metrics.jsonl       # against a run's step time

Streams packs through ``PackedLoader`` exactly as training resolves it from a config (default
``train/configs/gpu_1b.yaml``: 32k-token packs, BAGEL's transforms) on the stage-c-shaped shards
``bench/gpu_train.sh`` trains on (small images), or with ``--real-sizes N`` on dialogues of every
task with images at common text-to-image resolutions, once per ``--workers`` count, and reports packs/s and real
tokens/s after the first pack (worker start-up, reported apart). Compared with a step time --
``--step-s``, or the mean ``step_s`` of a run's ``metrics.jsonl`` after its warm-up, whose
``data_s`` column is the time each step really waited for its packs -- it prints the headroom:
packs the loader makes per step the model takes (above 1 the GPU never waits for data, when the
loader has its cores to itself). One JSON line per worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.train_fixtures import write_stage_c_shards
from train.config import TrainConfig
from train.data import PackedLoader, load_tokenizer
from train.metrics import read_metrics
from train.resolve import resolve_data_config, resolve_model_config, resolve_tokenizer_path

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(metrics: Path, skip: int = 5) -> tuple[float, float]:
    """Mean (step_s, data_s) of a run after its first ``skip`` steps (compile warm-up)."""
    rows = read_metrics(metrics)[skip:]
    if not rows:
        raise ValueError(f"{metrics} holds no steps after the first {skip}")
    return (
        statistics.fmean(r["step_s"] for r in rows),
        statistics.fmean(r.get("data_s", 0.0) for r in rows),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=ROOT / "train/configs/gpu_1b.yaml")
    ap.add_argument("--data", type=Path, default=None, help="shard dir (written when absent)")
    ap.add_argument(
        "--real-sizes",
        type=int,
        default=0,
        metavar="N",
        help="write N dialogues of every task with images at real resolutions (bench_packing's "
        "data) instead of gpu_train.sh's small-image stage-c shards",
    )
    ap.add_argument("--packs", type=int, default=12, help="packs timed after the first")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--step-s", type=float, default=None, help="training step time to compare")
    ap.add_argument("--metrics", type=Path, default=None, help="a run's metrics.jsonl")
    args = ap.parse_args()

    data = args.data or Path(
        f"/tmp/chatumm-bench-loader-real-{args.real_sizes}"
        if args.real_sizes
        else "/tmp/chatumm-bench-loader"
    )
    if not data.exists():
        if args.real_sizes:
            from bench_packing import write_data

            write_data(data, args.real_sizes, seed=0)
        else:  # the shards bench/gpu_train.sh writes
            write_stage_c_shards(data, samples=400, row_group_rows=8)
    cfg = TrainConfig.from_yaml(args.config)
    model_cfg = resolve_model_config(cfg, None, None)
    tokenizer = load_tokenizer(resolve_tokenizer_path(cfg, None, None))
    step_s, data_s = step_seconds(args.metrics) if args.metrics else (args.step_s, None)
    torch.set_num_threads(1)  # the main process only receives packs (or builds them at 0 workers)

    for workers in args.workers:
        data_cfg = resolve_data_config(cfg, model_cfg).model_copy(update={"num_workers": workers})
        stream = iter(PackedLoader([data], data_cfg, tokenizer))
        start = time.perf_counter()
        next(stream)
        first_s = time.perf_counter() - start
        start, tokens = time.perf_counter(), 0
        for _ in range(args.packs):
            tokens += next(stream).real_tokens
        seconds = time.perf_counter() - start
        del stream  # stops the workers
        packs_per_s = args.packs / seconds
        result = {
            "config": args.config.name, "data": data.name, "pack_tokens": data_cfg.pack_tokens,
            "workers": workers,
            "first_pack_s": round(first_s, 2), "packs_per_s": round(packs_per_s, 3),
            "real_tokens_per_s": round(tokens / seconds), "cores": os.cpu_count(),
            "load_avg": round(os.getloadavg()[0], 1),
        }  # fmt: skip
        if step_s:
            result["step_s"] = round(step_s, 3)
            result["headroom"] = round(packs_per_s * step_s, 2)
        if data_s is not None:
            result["run_data_wait_s"] = round(data_s, 4)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
