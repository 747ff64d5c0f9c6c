"""Packing throughput, packing efficiency and peak RSS of the data pipeline on CPU.

Writes a shard directory of synthetic dialogues (every task of the taxonomy plus understanding
Q&A and chat, drawn uniformly, built through the real contract and ShardWriter), then streams it
through ``PackedLoader`` in-process (one reader = one worker) and reports:

    dialogues/s, packed (real) tokens/s, packs/s, packing efficiency, peak RSS

Images are stored at real sizes (a mix of common text-to-image resolutions) but as smooth
gradients, so shards stay small: their token counts and every transform are those of real data;
PNG decoding of a photo costs more than of a gradient (see the report's caveat).

    python -m bench.bench_packing --dialogues 2000                  # full pipeline, paper sizes
    python -m bench.bench_packing --dialogues 100000 --plan-only    # efficiency over 100k
    python -m bench.bench_packing --config tiny --dialogues 100000  # RSS while streaming 100k

The shards hold ``--unique`` dialogues (default 10k); longer runs stream them epoch after
epoch, each epoch in a new seeded order, as training does.

``--plan-only`` runs the loader's reading, validation, planning and buffer packing without
decoding pixels: the packing efficiency at the paper's sizes on the length distribution.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from data_builders import ALL_TASKS, sample  # noqa: E402  (the tests' contract builders)

from synth.contract import validate_row  # noqa: E402
from synth.shards import ShardConfig, ShardWriter  # noqa: E402
from train.data import (  # noqa: E402
    ChatTokenizer,
    DataConfig,
    LoaderStats,
    PackBuffer,
    PackedLoader,
    Transforms,
    default_tokenizer_path,
    load_tokenizer,
    plan_dialogue,
)
from train.data.sampling import epoch_order  # noqa: E402
from train.data.source import Source  # noqa: E402

# (width, height) of common text-to-image / editing resolutions
RESOLUTIONS = [
    (1024, 1024),
    (768, 1344),
    (1344, 768),
    (896, 1152),
    (1152, 896),
    (512, 512),
    (640, 480),
    (800, 600),
]


def gradient_png(rng: random.Random, size: tuple[int, int]) -> bytes:
    """A horizontal colour ramp: a few KB as PNG, decoded at full size like any image."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    c = np.array([rng.random(), rng.random(), rng.random()], dtype=np.float32)
    img = np.broadcast_to((x * c).astype(np.uint8), (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_data(out: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = [gradient_png(rng, size) for size in RESOLUTIONS for _ in range(4)]
    with ShardWriter(out, shard=ShardConfig(max_rows=2000, row_group_rows=32)) as writer:
        for i in range(n):
            s = sample(rng.choice(ALL_TASKS), seed * 1_000_000 + i)
            images = tuple(img.model_copy(update={"data": rng.choice(pool)}) for img in s.images)
            writer.add(s.model_copy(update={"images": images}))
            writer.mark(i + 1)


def plan_only(source: Source, cfg: DataConfig, tok: ChatTokenizer, limit: int) -> LoaderStats:
    """The loader's packing decisions from token counts alone: every row validated and planned
    (text tokenized, image headers read), pushed through the same ``PackBuffer``."""
    stats = LoaderStats()
    transforms = Transforms.from_config(cfg)
    buffer: PackBuffer[int] = PackBuffer(cfg.pack_tokens, cfg.buffer_size, lambda n: n)
    packs: list[list[int]] = []

    def add(chosen: list[int] | None) -> None:
        if chosen:
            packs.append(chosen)

    def rows() -> Iterator[dict[str, Any]]:
        for epoch in range(cfg.epochs or 1):
            order = epoch_order(len(source.row_groups), cfg.seed, epoch, True)
            for f, g in (source.row_groups[i] for i in order):
                yield from source.read_group(f, g)

    for row in itertools.islice(rows(), limit):
        stats.rows_read += 1
        n = plan_dialogue(validate_row(row), tok, transforms).num_tokens
        if n > cfg.max_dialogue_tokens:
            stats.too_long += 1
            continue
        add(buffer.push(n))
    for chosen in buffer.drain():
        add(chosen)
    stats.packs, stats.dialogues = len(packs), sum(len(p) for p in packs)
    stats.real_tokens, stats.capacity_tokens = sum(map(sum, packs)), cfg.pack_tokens * len(packs)
    return stats


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dialogues", type=int, default=100_000, help="dialogues to stream")
    ap.add_argument("--unique", type=int, default=10_000, help="dialogues in the shards")
    ap.add_argument("--config", choices=["bagel", "tiny"], default="bagel")
    ap.add_argument("--data", type=Path, default=None, help="shard dir (reused if present)")
    ap.add_argument("--plan-only", action="store_true")
    ap.add_argument("--buffer", type=int, default=None)
    args = ap.parse_args()

    unique = min(args.unique, args.dialogues)
    data = args.data or Path(f"/tmp/chatumm-bench-{unique}")
    if not data.exists():
        t0 = time.perf_counter()
        write_data(data, unique, seed=0)
        print(f"wrote {unique} dialogues to {data} in {time.perf_counter() - t0:.0f}s")
    rows = Source.open(data).num_rows
    epochs = -(-args.dialogues // rows)  # each epoch reshuffles row groups and rows
    preset = DataConfig.bagel if args.config == "bagel" else DataConfig.tiny
    cfg = preset(epochs=epochs)
    if args.buffer:
        cfg = cfg.model_copy(update={"buffer_size": args.buffer})
    tok = load_tokenizer(default_tokenizer_path())
    torch.set_num_threads(1)  # one loader worker = one core (DataLoader workers run so too)

    t0, c0 = time.perf_counter(), time.process_time()
    if args.plan_only:
        stats = plan_only(Source.open(data), cfg, tok, args.dialogues)
    else:
        loader = PackedLoader(data, cfg, tok)
        for _ in loader:
            if loader.stats.dialogues >= args.dialogues:
                break
        stats = loader.stats
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"config={args.config} pack_tokens={cfg.pack_tokens} buffer={cfg.buffer_size} "
        f"plan_only={args.plan_only}"
    )
    print(
        f"dialogues {stats.dialogues} (too long {stats.too_long}, corrupt {stats.corrupt}) "
        f"packs {stats.packs} in {dt:.1f}s"
    )
    print(
        f"  {stats.dialogues / dt:,.0f} dialogues/s   {stats.real_tokens / dt:,.0f} packed tokens/s"
        f"   {stats.packs / dt:.2f} packs/s"
    )
    print(
        f"  per CPU-second of this process: {stats.real_tokens / cpu:,.0f} packed tokens/s "
        f"({cpu:.1f}s CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(
        f"  packing efficiency {stats.packing_efficiency:.4f}   "
        f"mean dialogue {stats.real_tokens / max(stats.dialogues, 1):,.0f} tokens"
    )
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
