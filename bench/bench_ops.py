"""Engine throughput benchmark: caption2query operations against a local fake LLM server.

Not a test. The fake server (``tests/fakes/fake_openai.py``, or ``fake_gemini.py`` with
``--backend gemini``) runs in its own process and answers
after 200 ms with a valid caption2query answer computed from the prompt; with ``--share-429`` a
share of answers are HTTP 429 with ``Retry-After: 1``, drawn per request (``--keyed-faults``),
so that the engine and the bare loop meet the same 429s on the same requests. Each measured run
is a fresh child process, so its CPU time and peak RSS are its own:

- ``engine``: ``run_op`` through ``Engine`` (the backend asked for, response cache in a fresh
  directory) and a ``ShardWriter`` writing every sample (a t_i_0_0 dialogue) to
  Parquet: rendering, parsing, validation, cache and shard writes all included; like
  ``synth run``, it holds at most twice the concurrency of operations at a time;
- ``bare``: the practical limit of this machine: an aiohttp session + semaphore sending the
  same pre-rendered request bodies in the backend's wire format and checking the finish reason
  (on a 429 it sleeps the Retry-After outside the semaphore and resends).

Both run under ``asyncio.run``, as ``synth run`` does.
Reported: wall time, requests/s, CPU ms per operation after start-up (imports, server start and
session set-up excluded), peak RSS, and the start-up time of a 10-operation run (exec to exit).
Every engine run checks all results: each answer must be exactly what the server computed for
that prompt, parsed into six results, with the chosen text in the shard.

    python bench/bench_ops.py                   # full table, writes bench/results/bench_ops.json
    python bench/bench_ops.py --backend openai gemini --out bench/results/bench_ops_gemini.json
    python bench/bench_ops.py --n 200 --concurrency 64 --out /tmp/smoke.json   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash"}

WORDS = (
    ("red", "wooden", "tiny", "old", "shiny", "striped", "golden", "quiet"),
    ("fox", "bicycle", "lighthouse", "teapot", "violin", "tractor", "owl", "sailboat"),
    ("rests on", "stands beside", "leans against", "sits under", "floats above", "hides behind"),
    ("a stone bridge", "a snowy hill", "a market stall", "a pine forest", "a harbour wall"),
    ("Soft morning light falls", "Rain streaks run", "Long shadows stretch", "Mist drifts"),
    ("across the scene", "over the background", "along the left edge", "behind it"),
)


def caption(i: int) -> str:
    """A varied, deterministic two-sentence caption (no two prompts alike)."""
    a, n, v, p, s, w = (words[(i * (k + 3) + k * k) % len(words)] for k, words in enumerate(WORDS))
    return f"A {a} {n} {v} {p}, photographed in scene {i}. {s} {w}."


def render_requests(n: int) -> list[Any]:
    """The caption2query requests ``run_op`` sends for inputs 0..n-1 (it draws the seed first)."""
    import random

    from ops import OPS
    from ops.protocol import GenerationParams

    spec = OPS["caption2query"]
    requests = []
    for i in range(n):
        rng = random.Random(i)
        params = GenerationParams(max_tokens=spec.max_tokens, seed=rng.getrandbits(31))
        requests.append(spec.render({"caption": caption(i)}, rng, params))
    return requests


# ---- child: one measured run ------------------------------------------------------------------


def _png() -> bytes:
    """A real 8x8 PNG: the "generated" image every bench sample carries."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 80, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _sample(result: Any, i: int, png: bytes, caption: str) -> Any:
    from synth.contract import DialogueSample, ImageRecord, Part, Provenance, Turn, make_sample_id

    return DialogueSample(
        sample_id=make_sample_id("a", i, [f"bench:{i}"], salt="t_i_0_0"),
        task="t_i_0_0",
        stage="a",
        turns=(
            Turn(role="user", parts=(Part.of_text(result.text, call=0),)),
            Turn(role="assistant", parts=(Part.of_image(0, "output"),)),
        ),
        images=(ImageRecord(data=png, source="bench", source_row=str(i), caption=caption),),
        provenance=Provenance(seed=i, llm_calls=(result.call,)),
    )


async def _engine_run(
    args: argparse.Namespace, out_dir: Path
) -> tuple[float, float, dict[str, Any]]:
    import random

    from ops import run_op
    from ops.backends import open_engine
    from ops.engine import EngineConfig
    from synth.shards import ShardWriter

    config = EngineConfig(
        backend=args.backend,
        model=MODEL[args.backend],
        base_url=args.url,
        concurrency=args.concurrency,
        cache_dir=out_dir / "cache",
        timeout_s=30,
    )
    if args.client == "sdk":  # the backend's client library instead of its own HTTP path
        from ops.backends import make_backend
        from ops.engine import Engine

        backend = make_backend(config)
        await backend.aclose()
        backend = type(backend)(config, client="sdk")  # type: ignore[call-arg]
        engine = Engine(backend, config)
    else:
        engine = open_engine(config)
    writer = ShardWriter(out_dir / "shards")
    png = _png()
    captions = [caption(i) for i in range(args.n)]  # the source rows, read before the clock starts

    async def one(i: int) -> None:
        inputs = {"caption": captions[i]}
        result = await run_op(engine, "caption2query", inputs, random.Random(i))
        if result.ok:
            writer.add(_sample(result, i, png, captions[i]))
        else:
            writer.add_reject(result.to_reject("a", source="bench", source_row=str(i)))

    # As `synth run` does (synth/stages/runner.py), at most twice the concurrency of operations
    # exist at a time, not one coroutine per input from the start (2,000 of them held ~5 MB
    # more at concurrency 256). Workers take the next input as they finish one, so a request
    # waiting out a 429 holds up no other.
    todo = iter(range(args.n))

    async def worker() -> None:
        for i in todo:
            await one(i)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(2 * args.concurrency)))
    writer.mark(args.n)
    writer.close(engine.stats.as_dict())
    await engine.aclose()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the check below
    total = engine.stats.total
    return (
        wall,
        cpu,
        {
            "peak_rss_mb": rss_mb,
            "incorrect": args.n - _correct_samples(out_dir / "shards", args.n),
            "requests": total.attempts,
            "retries": total.retries,
            "rate_limited": total.rate_limited,
            "limiter_decreases": engine.limiter.decreases,
        },
    )


def _correct_samples(shards: Path, n: int) -> int:
    """Samples in the shards whose answer is exactly what the server computed for their prompt,
    with all six results accepted and the request the chosen one, one per input: read back from
    the Parquet files."""
    from synth.shards import iter_samples
    from tests.fakes._server import FakeRequest
    from tests.fakes.answers import caption2query_answer

    seen: set[int] = set()
    for sample in iter_samples(shards):
        call = sample.provenance.llm_calls[0]
        expected = caption2query_answer(FakeRequest((("user", call.prompt),), {}))
        i = sample.provenance.seed
        if (
            call.response == expected
            and call.results[call.chosen] == sample.turns[0].parts[0].text
            and f"scene {i}." in call.prompt
            and len(call.results) == 6
            and call.refused[call.chosen] == ""  # the chosen result was judged and accepted
            and not any(r.startswith(("validate:", "parse:")) for r in call.refused)
        ):
            seen.add(i)
    return len(seen & set(range(n)))


def _wire(backend: str, url: str, n: int) -> tuple[str, dict[str, str], list[bytes]]:
    """The URL, headers and bodies the engine sends for inputs 0..n-1 (same seeds as run_op)."""
    import random

    import orjson

    from ops import OPS
    from ops.protocol import GenerationParams

    spec = OPS["caption2query"]
    requests = []
    for i in range(n):  # the same requests run_op sends (its RNG draws the seed first)
        rng = random.Random(i)
        params = GenerationParams(max_tokens=spec.max_tokens, seed=rng.getrandbits(31))
        requests.append(spec.render({"caption": caption(i)}, rng, params))
    if backend == "openai":
        from ops.engine.openai_backend import request_body as _body

        bodies = [orjson.dumps(_body(MODEL[backend], r)) for r in requests]
        return url + "/chat/completions", {"Content-Type": "application/json"}, bodies
    from ops.engine.gemini_backend import API_VERSION, request_body, thinking_budget

    budget = thinking_budget(MODEL[backend], None)
    bodies = [orjson.dumps(request_body(r, budget, MODEL[backend])) for r in requests]
    headers = {"Content-Type": "application/json", "x-goog-api-key": "bench-key"}
    return f"{url}/{API_VERSION}/models/{MODEL[backend]}:generateContent", headers, bodies


def _finished(backend: str, raw: bytes) -> bool:
    import orjson

    data = orjson.loads(raw)
    if backend == "openai":
        return bool(data["choices"][0]["finish_reason"] == "stop")
    return bool(data["candidates"][0]["finishReason"] == "STOP")


async def _bare_run(args: argparse.Namespace) -> tuple[float, float, dict[str, Any]]:
    import aiohttp

    url, headers, bodies = _wire(args.backend, args.url, args.n)
    sem = asyncio.Semaphore(args.concurrency)
    retries = 0
    t0, c0 = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(body: bytes) -> None:
            nonlocal retries
            while True:
                async with sem, session.post(url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    wait = float(resp.headers.get("Retry-After", 1)) if resp.status == 429 else None
                if wait is None:
                    assert resp.status == 200 and _finished(args.backend, raw), raw[:300]
                    return
                retries += 1
                await asyncio.sleep(wait)

        await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - t0, time.process_time() - c0, {"retries": retries}


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "engine":
            wall, cpu, extra = asyncio.run(_engine_run(args, Path(tmp)))
        else:
            wall, cpu, extra = asyncio.run(_bare_run(args))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_mb, **extra}))


# ---- parent: servers, runs, table -------------------------------------------------------------


def start_server(backend: str, share_429: float, table: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.fake_{backend}", "--latency", "0.2",
         "--share-429", str(share_429), "--retry-after", "1", "--keyed-faults",
         "--answer", "tests.fakes.answers:caption2query_answer", "--answer-table", str(table)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_child(
    backend: str, mode: str, url: str, n: int, concurrency: int, client: str = "http"
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--backend", backend, "--url", url,
           "--n", str(n), "--concurrency", str(concurrency), "--client", client]  # fmt: skip
    env = {**os.environ, "GEMINI_API_KEY": "bench-key"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["exec_to_exit_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[64, 256])
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per cell (start-up too); the fastest is reported, every run's wall and CPU kept",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_ops.json")
    ap.add_argument("--backend", nargs="*", choices=["openai", "gemini"], default=["openai"])
    ap.add_argument(
        "--client", choices=["http", "sdk"], default="http", help="the backends' client"
    )
    ap.add_argument("--child", choices=["engine", "bare"])
    ap.add_argument("--url", default="")
    args = ap.parse_args()
    if args.child:
        args.mode, args.concurrency, args.backend = args.child, args.concurrency[0], args.backend[0]
        child(args)
        return

    # The server answers from a table computed here, by the same function it would call, so
    # that its CPU goes to HTTP: it must not be the bottleneck.
    from tests.fakes.answers import AnswerTable, caption2query_answer

    table = AnswerTable.build(
        (r.messages[0].content for r in render_requests(args.n)), caption2query_answer
    )
    table_file = Path(tempfile.mkdtemp()) / "answers.json"
    table_file.write_text(json.dumps(table))
    rows: list[dict[str, Any]] = []

    def run(backend: str, share: float, mode: str, n: int, concurrency: int) -> dict[str, Any]:
        # A fresh server for every run: its keyed 429 draws count the repeats of each request,
        # so every run starts from the same count and meets the same 429s.
        proc, url = start_server(backend, share, table_file)
        try:
            return run_child(backend, mode, url, n, concurrency, args.client)
        finally:
            proc.terminate()
            proc.wait()

    for share in (0.0, 0.05):
        for conc in args.concurrency:
            for backend in args.backend:
                for mode in ("bare", "engine"):
                    runs = [run(backend, share, mode, args.n, conc) for _ in range(args.repeat)]
                    best = min(runs, key=lambda r: r["wall_s"])
                    spread = {"wall_s_runs": [r["wall_s"] for r in runs],
                              "cpu_s_runs": [r["cpu_s"] for r in runs]}  # fmt: skip
                    cell = {"backend": backend, "mode": mode, "share_429": share,
                            "concurrency": conc}  # fmt: skip
                    rows.append({**cell, **best, **spread})
                    print(_line(rows[-1], args.n), flush=True)
        if share == 0.0:
            for backend in args.backend:
                startup = min(
                    (run(backend, 0.0, "engine", 10, 64) for _ in range(args.repeat)),
                    key=lambda r: r["exec_to_exit_s"],
                )
                cell = {"backend": backend, "mode": "startup-10", "share_429": 0.0}
                rows.append({**cell, "concurrency": 64, **startup})
                print(f"{backend} start-up, 10-operation run: {startup['exec_to_exit_s']:.2f} s")
    report = {
        "n": args.n,
        "client": args.client,
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_at_end": os.getloadavg(),
        "rows": rows,
        "ratios": _ratios(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for key, value in report["ratios"].items():
        print(f"{key}: {value:.2f}x")
    print(f"wrote {args.out}")


def _line(r: dict[str, Any], n: int) -> str:
    extra = f" incorrect={r['incorrect']}" if r["mode"] == "engine" else ""
    return (
        f"{r['backend']:6s} {r['mode']:7s} 429={r['share_429']:.0%} conc={r['concurrency']:4d} "
        f"wall={r['wall_s']:6.2f}s {n / r['wall_s']:7.0f} op/s cpu={r['cpu_s'] / n * 1e3:6.3f} ms/op "
        f"rss={r['peak_rss_mb']:6.1f} MB retries={r.get('retries', 0)}{extra}"
    )


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """engine/bare wall per backend and cell; with both backends, gemini/openai engine wall."""
    cell = {
        (r["backend"], r["mode"], r["share_429"], r["concurrency"]): r["wall_s"]
        for r in rows
        if r["mode"] != "startup-10"
    }
    ratios = {
        f"{b} engine/bare wall, 429={share:.0%}, conc={conc}": cell[(b, "engine", share, conc)]
        / cell[(b, "bare", share, conc)]
        for (b, mode, share, conc) in cell
        if mode == "engine"
    }
    for b, mode, share, conc in cell:
        if b == "gemini" and mode == "engine" and ("openai", mode, share, conc) in cell:
            ratios[f"gemini/openai engine wall, 429={share:.0%}, conc={conc}"] = (
                cell[(b, mode, share, conc)] / cell[("openai", mode, share, conc)]
            )
    return ratios


if __name__ == "__main__":
    main()
