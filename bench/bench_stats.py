"""Throughput of `synth stats` (projected columns) against decoding every sample in full.

    python bench/bench_stats.py [N]      # N samples (default 4000) in a temporary directory

Prints samples/s for both; the projection should be several times faster and independent of
image size, since image bytes and raw prompts/responses are never read.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.shards import ShardConfig, ShardWriter, iter_samples
from synth.stats import compute_stats
from tests.fakes.dialogues import build

TASKS = ("t_i_0_0", "ti_i_0_0", "t_i_i1_n", "t_ti_i1_n", "t_i_t1_1")


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        t = time.perf_counter()
        with ShardWriter(out, shard=ShardConfig(max_rows=1000)) as w:
            for i in range(n):
                w.add(
                    build(
                        TASKS[i % len(TASKS)],
                        i,
                        lang="zh" if i % 3 else "en",
                        distractors=1 + i % 3,
                    )
                )
                w.mark(i + 1)
        size = sum(p.stat().st_size for p in out.glob("*.parquet"))
        print(f"wrote {n} samples ({size / 2**20:.1f} MiB) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        stats = compute_stats([out])
        dt = time.perf_counter() - t
        assert stats.samples == n
        print(f"synth stats (projected): {n / dt:,.0f} samples/s ({dt:.2f} s)")
        t = time.perf_counter()
        count = sum(1 for _ in iter_samples(out))
        dt = time.perf_counter() - t
        assert count == n
        print(f"full decode (iter_samples): {n / dt:,.0f} samples/s ({dt:.2f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
