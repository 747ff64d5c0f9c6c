"""How fast the offline path runs: render + template backend + parse + validate, per operation.

    python bench/bench_ops_template.py [calls_per_op]

The `template` backend exists so a dry run over a whole source finishes in seconds; this
prints calls per second for each operation on this machine (single process, one event loop).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from ops import OPS, TemplateBackend, run_op
from tests.ops_cases import INPUTS


async def main(n: int) -> None:
    backend = TemplateBackend()
    rng = random.Random(0)
    for op in OPS:  # warm up: the first call imports synth.contract (pyarrow), compiles regexes
        await run_op(backend, op, INPUTS[op], rng)
    total = 0.0
    for op in OPS:
        start = time.perf_counter()
        for _ in range(n):
            result = await run_op(backend, op, INPUTS[op], rng)
            assert result.ok, result.detail
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"{op:18s} {n / elapsed:8.0f} calls/s")
    print(f"{'all':18s} {n * len(OPS) / total:8.0f} calls/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
