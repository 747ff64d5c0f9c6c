"""Row-group size for image rows: a training reader's read throughput against its memory.

    python bench/bench_row_groups.py                                # 512 rows, sizes 8..256
    python bench/bench_row_groups.py --rows 1024 --sizes 16 64 --repeat 5

Writes the same dialogues (every task, 1-4 images each, photos from ``examples/data`` resized
to common text-to-image resolutions with a little grain and saved as JPEG at quality 90, so
their bytes are those of real training images) once per ``row_group_rows`` with the real
``ShardWriter`` (row-group byte cap lifted, so the row count alone decides), then reads each
directory in a fresh process the way a loader reader does (``train.data.reader``: one unit at
a time, ``Source.read_rows``, each row made a Python row when read) and reports

    write us/row, read rows/s and MB/s, Arrow peak (the pool's high-water mark) and peak RSS
    above the process after imports

for one reader (``--readers 1``: every row group) and for reader 0 of 4 (``--readers 4``: a
quarter of the row groups, or strided parts of each when there are fewer than four). For scale,
it also times decoding a row's images to RGB, the work each row costs the reader next.
Timings are medians over ``--repeat`` alternated runs.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

RESOLUTIONS = [(1024, 1024), (768, 1344), (1344, 768), (896, 1152), (512, 512), (800, 600)]


def photo_pool(n: int, seed: int) -> list[bytes]:
    """``n`` JPEGs of real photos at training resolutions (grain keeps the upscale from being
    smoother, hence smaller, than a camera's)."""
    rng = np.random.default_rng(seed)
    photos = sorted((ROOT / "examples" / "data").rglob("*.jpg"))
    pool = []
    for i in range(n):
        size = RESOLUTIONS[i % len(RESOLUTIONS)]
        img = Image.open(photos[i % len(photos)]).convert("RGB").resize(size, Image.BICUBIC)
        pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size[1], size[0], 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    return pool


def write(out: Path, rows: int, group_rows: int, pool: list[bytes], seed: int) -> float:
    """Seconds per row to write ``rows`` dialogues in row groups of ``group_rows``."""
    from data_builders import ALL_TASKS, sample

    from synth.shards import ShardConfig, ShardWriter

    rng = random.Random(seed)
    samples = []
    for i in range(rows):
        s = sample(rng.choice(ALL_TASKS), seed * 1_000_000 + i)
        images = tuple(img.model_copy(update={"data": rng.choice(pool)}) for img in s.images)
        samples.append(s.model_copy(update={"images": images}))
    shard = ShardConfig(max_rows=rows, row_group_rows=group_rows, row_group_bytes=1 << 40)
    started = time.perf_counter()
    with ShardWriter(out, shard=shard) as writer:
        for i, s in enumerate(samples):
            writer.add(s)
            writer.mark(i + 1)
    return (time.perf_counter() - started) / rows


def child(directory: Path, readers: int) -> dict[str, float]:
    """Reader 0 of ``readers`` reads its units once, as ``ReaderStream`` does."""
    import pyarrow as pa

    from train.data.reader import _Rows
    from train.data.sampling import epoch_units, parts_per_group, row_order, stride
    from train.data.source import Source

    source = Source.open(directory)
    base_rss = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
    pool = pa.default_memory_pool()
    started = time.perf_counter()
    parts = parts_per_group([n for _, _, n in source.sized_groups], readers)
    units = stride(epoch_units(source.sized_groups, parts, 0, 0, True), 0, readers)
    count = nbytes = 0
    for unit in units:
        order = row_order(unit, 0, 0, True)
        rows = _Rows(source, unit.file, unit.group, order)
        for r in order:
            row = rows[r]
            count += 1
            nbytes += sum(len(img["image"]["bytes"]) for img in row["images"])
    seconds = time.perf_counter() - started
    return {
        "rows": count,
        "rows_per_s": count / seconds,
        "mb_per_s": nbytes / seconds / 1e6,
        "arrow_peak_mb": pool.max_memory() / 1e6,
        "rss_above_mb": rss_mb("VmHWM") - base_rss,
        "image_mb_per_row": nbytes / count / 1e6,
    }


def rss_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    (line,) = (x for x in status if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def decode_ms_per_row(directory: Path, limit: int = 64) -> float:
    from train.data.source import Source

    source = Source.open(directory)
    rows = source.read_group(0, 0)[:limit]
    started = time.perf_counter()
    for row in rows:
        for img in row["images"]:
            Image.open(io.BytesIO(img["image"]["bytes"])).convert("RGB")
    return (time.perf_counter() - started) / len(rows) * 1e3


def run_child(directory: Path, readers: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(directory), "--readers", str(readers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--readers", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.readers[0])))
        return

    pool = photo_pool(48, seed=0)
    print(f"image pool: {len(pool)} JPEGs, mean {statistics.mean(map(len, pool)) / 1e3:.0f} KB")
    with tempfile.TemporaryDirectory() as tmp:
        dirs, write_us = {}, {}
        for size in args.sizes:
            dirs[size] = Path(tmp) / f"g{size}"
            write_us[size] = write(dirs[size], args.rows, size, pool, seed=1) * 1e6
        print(f"decode to RGB: {decode_ms_per_row(dirs[args.sizes[0]]):.1f} ms/row")
        results: dict[tuple[int, int], list[dict[str, float]]] = {}
        for _ in range(args.repeat):  # alternated, so background load falls on every size
            for size in args.sizes:
                for readers in args.readers:
                    results.setdefault((size, readers), []).append(run_child(dirs[size], readers))
        print(
            "| rows/group | MB/group | write us/row | readers | rows read | rows/s | MB/s "
            "| Arrow peak MB | RSS above imports MB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (size, readers), runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(
                f"| {size} | {size * med['image_mb_per_row']:.1f} | {write_us[size]:.0f} "
                f"| {readers} | {med['rows']:.0f} | {med['rows_per_s']:.0f} "
                f"| {med['mb_per_s']:.0f} | {med['arrow_peak_mb']:.0f} "
                f"| {med['rss_above_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
