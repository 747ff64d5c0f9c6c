"""``eval.every`` during training: the context probes on held-out data, logged beside the metrics.

The evaluation set is read once, at the start of the run: ``eval.data`` when given, else the
held-out split (``data.overrides.holdout``) of the training directories, which the training
loader skips. Every ``eval.every`` steps all ranks run the probes on the model being trained;
rank 0 appends the headline numbers to ``<run>/eval.jsonl`` (one record per evaluation, with
``step``; truncated on resume like ``metrics.jsonl``), writes them to TensorBoard under
``eval/``, prints one line and writes the full report to ``<run>/eval/step-NNNNNNN/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.distributed.fsdp import register_fsdp_forward_method

from train.checkpoint import step_dir_name
from train.config import TrainConfig
from train.data.config import DataConfig
from train.data.tokenizer import load_tokenizer
from train.eval.render import write_report
from train.eval.run import Evaluator, flat_metrics, summary_line
from train.metrics import truncate_after
from train.model.config import ModelConfig

EVAL_FILE = "eval.jsonl"


class TrainingEval:
    def __init__(
        self,
        cfg: TrainConfig,
        data: Sequence[Path],
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        tokenizer_path: Path,
        model: nn.Module,
        rt: Any,
        out: Path,
        start_step: int,
        message: Callable[[str], None],
    ):
        """``rt``: the loop's ``Runtime`` (rank, world_size, device); every rank builds one."""
        ecfg = cfg.eval
        if ecfg.data:
            dirs: Sequence[str | Path] = ecfg.data
            holdout = ecfg.holdout
        else:
            if ecfg.holdout is not None and ecfg.holdout != data_cfg.holdout:
                raise ValueError(
                    f"eval.holdout {ecfg.holdout} differs from data.overrides.holdout "
                    f"{data_cfg.holdout}: the probes would read training samples; drop eval.holdout"
                )
            dirs, holdout = data, data_cfg.holdout
        self.every, self.out, self.message = ecfg.every, out, message
        register_fsdp_forward_method(model, "token_losses")
        self.evaluator = Evaluator(
            ecfg.model_copy(update={"plot": False}),
            dirs,
            holdout=holdout,
            data_cfg=data_cfg,
            model_cfg=model_cfg,
            tokenizer=load_tokenizer(tokenizer_path),
            attention=cfg.parallel.attention,
            device=rt.device,
            rank=rt.rank,
            world=rt.world_size,
        )
        if self.evaluator.num_dialogues == 0:
            raise ValueError(
                f"eval.every: no dialogue to probe in {[str(d) for d in dirs]} (holdout "
                f"{holdout}; counts {self.evaluator.eval_set.counts}); raise the holdout "
                "fraction or set eval.data"
            )
        self._tb: Any = None
        if rt.rank == 0:
            truncate_after(out / EVAL_FILE, start_step)
            if cfg.log.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(
                        str(out / "tensorboard"), purge_step=start_step + 1, filename_suffix=".eval"
                    )
                except ImportError:
                    self._tb = None
        message(
            f"eval every {self.every} steps: {self.evaluator.num_dialogues} held-out dialogues, "
            f"{len(self.evaluator.packs)} forward(s)"
        )

    def maybe_run(self, model: nn.Module, step: int) -> None:
        """Every rank calls this after each step; the probes run every ``eval.every`` steps."""
        if step % self.every:
            return
        report = self.evaluator.run(model, checkpoint=f"step {step}", step=step)
        if report is None:
            return
        write_report(report, self.out / "eval" / step_dir_name(step), plot=False)
        record = {"step": step, **flat_metrics(report)}
        with open(self.out / EVAL_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and math.isfinite(value):
                    self._tb.add_scalar(f"eval/{key}", value, step)
            self._tb.flush()
        self.message(f"eval step {step}: {summary_line(report)}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
