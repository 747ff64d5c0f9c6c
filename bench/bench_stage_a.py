"""Stage a throughput and peak memory against a local OpenAI-compatible server.

    python bench/bench_stage_a.py                      # 20,000 t2i rows, 200 ms, concurrency 256
    python bench/bench_stage_a.py --rows 200000

Writes N synthetic text-to-image rows (one small real JPEG reused, varied captions) as a Parquet
source, starts the fake OpenAI server in its own process (answers after ``--latency`` seconds
with well-formed results for every operation), runs ``synth run stage-a --llm openai`` in a
child process, and reports samples/s and the child's peak RSS. The ideal for one-call tasks
is concurrency / latency requests per second (1280/s at 256 and 200 ms).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys, time
from tests.fakes.fake_openai import FakeOpenAI
from tests.stages_support import op_answer
server = FakeOpenAI(answer=op_answer, latency_s=float(sys.argv[1]), log_requests=False).start()
print(server.base_url, flush=True)
while True:
    time.sleep(3600)
"""
COLORS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "brown"]
THINGS = ["cat", "dog", "bicycle", "teapot", "lighthouse", "sailboat", "violin", "cactus",
          "owl", "tram", "kite", "tractor", "fox", "piano", "umbrella", "parrot"]  # fmt: skip
PLACES = ["on a wooden table", "in a snowy field", "beside a lake", "under a streetlight",
          "in a sunny kitchen", "on a city rooftop", "in a pine forest", "at a train station"]  # fmt: skip


def write_source(folder: Path, rows: int) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((96, 64), 40).convert("RGB").save(buffer, format="JPEG", quality=80)
    jpeg = buffer.getvalue()
    rng = random.Random(0)
    path = folder / "t2i.parquet"
    schema = pa.schema([("id", pa.string()), ("image", pa.binary()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            captions = [
                f"A {rng.choice(COLORS)} {rng.choice(THINGS)} {rng.choice(PLACES)}, photographed "
                f"in soft light (frame {start + i})."
                for i in range(n)
            ]
            writer.write_table(
                pa.table(
                    {
                        "id": [f"r{start + i}" for i in range(n)],
                        "image": [jpeg] * n,
                        "caption": captions,
                    },
                    schema=schema,
                )
            )
    (folder / "sources.yaml").write_text(
        "sources:\n  - {name: bench, kind: t2i, path: t2i.parquet, columns: {id: id}}\n"
    )
    return folder / "sources.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        sources = write_source(folder, args.rows)
        print(f"wrote {args.rows} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(args.latency)], stdout=subprocess.PIPE, text=True,
            cwd=ROOT,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            base_url = server.stdout.readline().strip()
            out = folder / "out"
            cmd = [sys.executable, "-m", "synth", "run", "stage-a", f"--sources={sources}",
                   f"--out={out}", "--llm=openai", f"--base-url={base_url}",
                   f"--concurrency={args.concurrency}", "--no-progress"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, env={"OPENAI_API_KEY": "bench", **_env()})
            wall = time.perf_counter() - start
        finally:
            server.kill()
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        manifest = json.loads((out / "manifest-00000.json").read_text())
        summary = manifest["summary"]
        result = {
            "rows": args.rows,
            "samples": summary["samples"],
            "rejects": sum(summary["rejects"].values()),
            "llm_requests": summary["llm"]["requests"],
            "samples_per_s": summary["this_run"]["samples_per_s"],
            "wall_s_with_startup": round(wall, 1),
            "ideal_requests_per_s": round(args.concurrency / args.latency),
            "peak_rss_mb_largest_child": round(peak_mb),
        }
        print(json.dumps(result, indent=2))


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


if __name__ == "__main__":
    main()
