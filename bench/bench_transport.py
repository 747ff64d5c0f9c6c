"""Which client for the openai backend: aiohttp or the openai SDK, beside a bare aiohttp loop.

Not a test. Starts the fake OpenAI server in its own process (200 ms latency) and sends N
requests at a given concurrency through each client, reporting wall time and the client
process's CPU time per request. Results: bench/results/bench_ops.md.

    python bench/bench_transport.py --n 2000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.engine.config import EngineConfig
from ops.engine.openai_backend import OpenAIBackend
from ops.protocol import LLMRequest, Message


def start_fake(
    latency: float, share_429: float = 0.0, retry_after: float = 1.0
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_openai",
            "--latency",
            str(latency),
            "--share-429",
            str(share_429),
            "--retry-after",
            str(retry_after),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def requests(n: int) -> list[LLMRequest]:
    return [
        LLMRequest("bench", (Message("user", f"Write a short search query for image {i}."),))
        for i in range(n)
    ]


async def run_backend(backend: OpenAIBackend, reqs: list[LLMRequest], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(r: LLMRequest) -> None:
        async with sem:
            out = await backend.complete(r)
            assert out.finish_reason == "stop"

    await asyncio.gather(*(one(r) for r in reqs))
    await backend.aclose()


async def run_bare(base_url: str, reqs: list[LLMRequest], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(r: LLMRequest) -> None:
            body = orjson.dumps(
                {
                    "model": "m",
                    "messages": [{"role": m.role, "content": m.content} for m in r.messages],
                }
            )
            async with (
                sem,
                session.post(
                    base_url + "/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp,
            ):
                data = orjson.loads(await resp.read())
                assert data["choices"][0]["finish_reason"] == "stop"

        await asyncio.gather(*(one(r) for r in reqs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds, clients alternated in each")
    args = ap.parse_args()
    proc, base_url = start_fake(args.latency)
    try:
        config = EngineConfig(backend="openai", model="m", base_url=base_url)
        runs = {
            "bare aiohttp": lambda r: run_bare(base_url, r, args.concurrency),
            "openai backend (http)": lambda r: run_backend(
                OpenAIBackend(config, client="http"), r, args.concurrency
            ),
            "openai backend (sdk)": lambda r: run_backend(
                OpenAIBackend(config, client="sdk"), r, args.concurrency
            ),
        }
        print(f"{'client':28s} {'wall s':>8s} {'req/s':>8s} {'CPU ms/req':>10s}")
        for _ in range(args.repeat):
            for name, fn in runs.items():
                asyncio.run(fn(requests(20)))  # warm-up: imports, first connections
                reqs = requests(args.n)
                t0, c0 = time.perf_counter(), time.process_time()
                asyncio.run(fn(reqs))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                print(f"{name:28s} {wall:8.2f} {args.n / wall:8.0f} {cpu / args.n * 1e3:10.3f}")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
