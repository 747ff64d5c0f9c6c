"""Per-step training metrics: a JSONL log, TensorBoard when installed, a rank-0 progress bar.

Only rank 0 writes. ``metrics.jsonl`` in the run directory holds one JSON object per logged step
(at least ``step``, ``ce``, ``mse``, ``lr``; the loop adds throughput, ``data_s`` -- the time the
step waited for its packs, inside ``step_s`` -- and ``compiles``, graphs compiled since the
last record). On resume, records after the checkpoint's step are
dropped first, so the file always reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.jsonl"

# Dense bf16 peak of one accelerator, by device-name substring (for the MFU estimate).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class CompileCounter:
    """Graphs Dynamo has compiled since the last ``read`` (``compiles`` in the metrics): the
    first steps compile each block once; after that, any count is a recompile."""

    def __init__(self) -> None:
        self._seen = self.total()

    @staticmethod
    def total() -> int:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    def read(self) -> int:
        now = self.total()
        new, self._seen = now - self._seen, now
        return new


class StepProfiler:
    """``--profile N``: a torch profiler trace of N training steps after ``skip`` steps (compile
    and allocator warm-up), one Chrome/Perfetto trace per rank under ``out_dir``, plus a table of
    the most expensive ops. Call ``step()`` after every training step."""

    def __init__(
        self, out_dir: Path, *, rank: int, steps: int, device: torch.device, skip: int = 3
    ):
        from torch.profiler import ProfilerActivity, profile, schedule

        self.out_dir, self.rank = out_dir, rank
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(
            activities=activities,
            schedule=schedule(wait=max(skip - 1, 0), warmup=1, active=steps, repeat=1),
            on_trace_ready=self._write,
            record_shapes=True,
        )
        self._device = device
        self._prof.start()

    def _write(self, prof: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out_dir / f"trace_rank{self.rank}.json"))
        sort = "self_cuda_time_total" if self._device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=40)
        (self.out_dir / f"ops_rank{self.rank}.txt").write_text(table + "\n", encoding="utf-8")

    def step(self) -> None:
        self._prof.step()

    def stop(self) -> None:
        self._prof.stop()


def truncate_after(path: Path, step: int) -> None:
    """Keep the records with ``step <= step`` (atomically rewritten)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class MetricsLogger:
    def __init__(
        self,
        out_dir: Path,
        *,
        rank: int,
        start_step: int,
        max_steps: int,
        tensorboard: bool,
        progress: bool,
    ):
        self.enabled = rank == 0
        self.path = out_dir / METRICS_FILE
        self._file = None
        self._tb: Any = None
        self._progress: Any = None
        if not self.enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        truncate_after(self.path, start_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:
                self._tb = None
        if progress and sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(
                "train", total=max_steps, completed=start_step, info=""
            )
            self._progress.start()

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self._file is not None
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        step = record["step"]
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, step)
        line = _summary(record)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=line)
        else:
            print(f"step {step} {line}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def _summary(record: dict[str, Any]) -> str:
    parts = [f"ce {record['ce']:.4f}", f"mse {record['mse']:.4f}", f"lr {record['lr']:.2e}"]
    if "grad_norm" in record:
        parts.append(f"gnorm {record['grad_norm']:.3f}")
    if "tokens_per_s" in record:
        parts.append(f"tok/s {record['tokens_per_s']:.0f}")
    if record.get("mfu") is not None:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if record.get("compiles"):
        parts.append(f"compiled {record['compiles']}")
    return " ".join(parts)
