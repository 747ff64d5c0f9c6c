"""Context gain of the tiny preset before and after a few hundred CPU steps on the bundled data.

    python -m bench.bench_eval                      # 300 steps, probes every 100
    python -m bench.bench_eval --steps 600 --every 200 --holdout 0.3

1. Makes the bundled stage a + b + c data with the README's main-job commands (``synth run``
   with the offline ``template`` backend) in ``--work``.
2. Probes the step-0 model (the tiny preset's initial weights, seed 0) on the held-out split
   (``--holdout`` of the sample ids), through the library (``train.eval.Evaluator``).
3. Trains ``train/configs/tiny.yaml`` for ``--steps`` with ``data.overrides.holdout`` (the
   held-out dialogues are never trained on) and ``eval.every`` (the probes during training).
4. Probes the final checkpoint with ``python -m train eval --holdout`` (the command a user runs).
5. Writes ``bench/results/bench_eval.md`` (per-task tables before and after, the curve of the
   in-training probes, wall times and tokens/s), ``bench_eval.json`` (the same numbers) and
   ``bench_eval.png`` (the chart of the final checkpoint).

Caveat: the held-out split is by sample id. Stage b and c dialogues are derived from stage-a
ones, so a held-out dialogue can share its images and captions with a trained one; the numbers
measure a model on unseen dialogues, not on unseen content.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def make_data(work: Path) -> list[Path]:
    """The README's main job (stages a -> b -> c with the template backend)."""
    synth = [sys.executable, "-m", "synth"]
    dirs = [work / "stage-a", work / "stage-b", work / "stage-c"]
    if all((d / "manifest-00000.json").is_file() for d in dirs):
        return dirs
    _run([*synth, "run", "stage-a", "--sources", "examples/sources.yaml", "--out", str(dirs[0])])
    _run([*synth, "run", "stage-b", "--in", str(dirs[0]), "--out", str(dirs[1])])
    _run([*synth, "run", "stage-c", "--in", str(dirs[0]), "--in", str(dirs[1]), "--out", str(dirs[2])])  # fmt: skip
    return dirs


def write_config(work: Path, args: argparse.Namespace) -> Path:
    raw = yaml.safe_load((ROOT / "train/configs/tiny.yaml").read_text())
    raw["max_steps"] = args.steps
    raw["data"]["overrides"]["holdout"] = args.holdout
    raw["checkpoint"] = {"every": args.steps, "keep": 1}
    raw["log"] = {"every": 10, "tensorboard": False, "progress": False}
    raw["eval"] = {"every": args.every, "max_per_task": args.max_per_task}
    path = work / "tiny_eval.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def probe_initial(config: Path, dirs: list[Path], args: argparse.Namespace) -> tuple[dict, float]:
    """The step-0 model (the weights training starts from), probed through the library."""
    from train.config import TrainConfig
    from train.data import load_tokenizer
    from train.eval.config import EvalConfig
    from train.eval.run import Evaluator
    from train.loop import initial_model
    from train.resolve import resolve_data_config, resolve_model_config, resolve_tokenizer_path

    cfg = TrainConfig.from_yaml(config)
    model_cfg = resolve_model_config(cfg, None, None)
    evaluator = Evaluator(
        EvalConfig(max_per_task=args.max_per_task),
        dirs,
        holdout=args.holdout,
        data_cfg=resolve_data_config(cfg, model_cfg),
        model_cfg=model_cfg,
        tokenizer=load_tokenizer(resolve_tokenizer_path(cfg, None, None)),
        attention="sdpa",
        device=torch.device("cpu"),
    )
    started = time.perf_counter()
    report = evaluator.run(initial_model(cfg, model_cfg, None), "tiny preset, step 0", step=0)
    assert report is not None
    return report, time.perf_counter() - started


def _gain(g: dict[str, Any]) -> str:
    if not g["n"]:
        return "–"
    return f"{g['mean']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}]"


def _intent(s: dict[str, Any]) -> str:
    i = s["intent"]["true"]
    return "/".join("–" if i[k] != i[k] else f"{100 * i[k]:.0f}%" for k in ("modality", "end"))


def comparison(before: dict, after: dict) -> list[str]:
    lines = [
        "| task | n | CE true before → after | ΔCE replaced before → after | ΔCE none before → after "
        "| MSE true before → after | ΔMSE replaced before → after | ΔMSE none before → after "
        "| intent modality/end before → after |",
        "|" + "---|" * 9,
    ]
    groups = {**after["by_task"], **{f"depth {k}": v for k, v in after["by_depth"].items()}}
    groups["all"] = after["all"]
    old = {**before["by_task"], **{f"depth {k}": v for k, v in before["by_depth"].items()}}
    old["all"] = before["all"]
    for name, a in groups.items():
        b = old[name]
        ga, gb = a["gain"], b["gain"]
        lines.append(
            f"| {name} | {a['dialogues']} | {b['ce']['true']:.3f} → {a['ce']['true']:.3f} "
            f"| {_gain(gb['ce_replaced'])} → {_gain(ga['ce_replaced'])} "
            f"| {_gain(gb['ce_none'])} → {_gain(ga['ce_none'])} "
            f"| {b['mse']['true']:.4f} → {a['mse']['true']:.4f} "
            f"| {_gain(gb['mse_replaced'])} → {_gain(ga['mse_replaced'])} "
            f"| {_gain(gb['mse_none'])} → {_gain(ga['mse_none'])} "
            f"| {_intent(b)} → {_intent(a)} |"
        )
    return lines


def curve(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines() if line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--max-per-task", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: temp)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_eval_"))
    work.mkdir(parents=True, exist_ok=True)

    dirs = make_data(work)
    config = write_config(work, args)
    before, before_s = probe_initial(config, dirs, args)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    data = [str(d) for d in dirs]
    train_s = _run([sys.executable, "-m", "train", "--config", str(config), "--data", *data, "--out", str(run)])  # fmt: skip
    after_dir = work / "after"
    after_s = _run(
        [sys.executable, "-m", "train", "eval", "--checkpoint", str(run), "--data", *data,
         "--holdout", str(args.holdout), "--max-per-task", str(args.max_per_task),
         "--out", str(after_dir)]
    )  # fmt: skip
    after = json.loads((after_dir / "report.json").read_text())
    points = curve(run)
    train_tok_s = [r["tokens_per_s"] for r in map(json.loads, (run / "metrics.jsonl").open())]

    args.results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(after_dir / "report.png", args.results / "bench_eval.png")
    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "args": {k: str(v) for k, v in vars(args).items()},
        "wall_s": {"probe_before": before_s, "train": train_s, "probe_after_cli": after_s},
        "probe_tokens_per_s": {"before": before["tokens_per_s"], "after": after["tokens_per_s"]},
        "train_tokens_per_s_median": sorted(train_tok_s)[len(train_tok_s) // 2],
        "before": {
            k: before[k] for k in ("all", "by_task", "by_depth", "by_distractors", "counts")
        },
        "after": {k: after[k] for k in ("all", "by_task", "by_depth", "by_distractors", "counts")},
        "curve": [{k: v for k, v in p.items() if "/" not in k} for p in points],
    }
    (args.results / "bench_eval.json").write_text(
        json.dumps(_finite(summary), indent=1, ensure_ascii=False) + "\n"
    )
    command = " ".join(["python -m bench.bench_eval", *sys.argv[1:]])
    lines = [
        "# bench_eval: context gain before and after training (tiny preset, CPU)",
        "",
        f"{summary['date']}, {summary['machine']}; `{command}`. The machine's 2 cores are shared "
        "with other jobs: wall times and tokens/s are disturbed.",
        "",
        f"Data: the README's main job (stages a+b+c, 210 dialogues); held out by sample id: "
        f"{args.holdout} -> {after['all']['dialogues']} probed dialogues "
        f"(counts {after['counts']}). Training: train/configs/tiny.yaml for {args.steps} steps "
        "with `data.overrides.holdout` (the probed dialogues are never trained on). Before = the "
        "step-0 weights; after = `python -m train eval` on the final checkpoint. Noise levels "
        f"t = {after['timesteps']}, seed {after['seed']}.",
        "",
        f"Wall: probes before {before_s:.0f} s ({before['tokens_per_s']:.0f} tokens/s), training "
        f"{train_s:.0f} s (median {summary['train_tokens_per_s_median']:.0f} tokens/s, probes "
        f"every {args.every} steps included), probes after {after_s:.0f} s with the CLI's start-up "
        f"({after['tokens_per_s']:.0f} tokens/s in the forwards).",
        "",
        "Δ = loss under the replaced (or no) history minus loss under the true history, mean over "
        "dialogues [95% bootstrap interval]; > 0 means the model uses the history. Intent: "
        "modality/end accuracy of the final answer, true history.",
        "",
        *comparison(before, after),
        "",
        "## During training (`eval.every`, overall)",
        "",
        "| step | ΔMSE replaced | ΔMSE none | ΔCE replaced | ΔCE none | intent modality | intent end |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {p['step']} | {p.get('gain_mse_replaced', float('nan')):+.4f} "
            f"| {p.get('gain_mse_none', float('nan')):+.4f} "
            f"| {p.get('gain_ce_replaced', float('nan')):+.4f} "
            f"| {p.get('gain_ce_none', float('nan')):+.4f} "
            f"| {100 * p['intent_modality']:.0f}% | {100 * p['intent_end']:.0f}% |"
            for p in points
        ),
        "",
        "The chart of the final checkpoint: `bench_eval.png`; every number: `bench_eval.json`.",
        "",
    ]
    (args.results / "bench_eval.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    main()
