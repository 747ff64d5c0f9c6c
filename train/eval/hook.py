"""``eval.every`` during training: the context probes on held-out data, logged beside the metrics.

The evaluation set is read once, at the start of the run: ``eval.data`` when given, else the
held-out split (``data.overrides.holdout``) of the training directories, which the training
loader skips. Every ``eval.every`` steps all ranks run the probes on the model being trained;
rank 0 appends the headline numbers to ``<run>/eval.jsonl`` (one record per evaluation, with
``step``; truncated on resume like ``metrics.jsonl``), writes them to TensorBoard under
``eval/``, prints one line and writes the full report to ``<run>/eval/step-NNNNNNN/``.

With ``eval.generation.per_task`` set, the generation report (``train.eval.generation``) follows
the probes every ``eval.generation.every`` steps (default: at each evaluation), into
``<run>/eval/step-NNNNNNN/generation/``. The ranks gather the full weights into an unsharded
copy on rank 0 (in CPU memory first, then on its device in the inference dtype), rank 0
generates alone and the others wait in a barrier: keep ``per_task`` small during training (the
barrier is bound by the process group's timeout) and make the full report with
``python -m train eval --generate``, which every rank shares.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import register_fsdp_forward_method

from train.checkpoint import step_dir_name
from train.config import TrainConfig
from train.data.config import DataConfig
from train.data.tokenizer import load_tokenizer
from train.data.transforms import Transforms
from train.eval.generation import GenerationReport
from train.eval.render import write_report
from train.eval.run import Evaluator, flat_metrics, summary_line
from train.infer.load import Assets, prepare_model
from train.metrics import truncate_after
from train.model import ChatUMM
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
        self.model_cfg, self.rt = model_cfg, rt
        tokenizer = load_tokenizer(tokenizer_path)
        register_fsdp_forward_method(model, "token_losses")
        self.evaluator = Evaluator(
            ecfg.model_copy(update={"plot": False}),
            dirs,
            holdout=holdout,
            data_cfg=data_cfg,
            model_cfg=model_cfg,
            tokenizer=tokenizer,
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
        self.generation: GenerationReport | None = None
        if ecfg.generation.per_task:
            self.generation = GenerationReport(
                ecfg.generation, dirs, holdout=holdout, seed=ecfg.seed, tasks=ecfg.tasks
            )
            self.generate_every = ecfg.generation.every or ecfg.every
            self.tokenizer, self.transforms = tokenizer, Transforms.from_config(data_cfg)
            message(
                f"generation report every {self.generate_every} steps: "
                f"{len(self.generation.samples)} held-out dialogues"
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
        if report is not None:
            self._log(report, step)
        if self.generation is not None and step % self.generate_every == 0:
            self._generate(self.generation, model, step, report)

    def _log(self, report: dict[str, Any], step: int) -> None:
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

    def _generate(
        self,
        generation: GenerationReport,
        model: nn.Module,
        step: int,
        report: dict[str, Any] | None,
    ) -> None:
        """Every rank calls this; rank 0 generates on an unsharded copy of the weights."""
        copy = unsharded_copy(model, self.model_cfg, self.rt.device, self.rt.rank)
        if copy is not None:
            assets = Assets(copy, self.tokenizer, self.transforms, self.out)
            written = generation.run(
                assets,
                self.out / "eval" / step_dir_name(step) / "generation",
                checkpoint=f"step {step}",
                step=step,
                probes=report["dialogues"] if report is not None else (),
            )
            del assets, copy
            if self.rt.device.type == "cuda":
                torch.cuda.empty_cache()
            assert written is not None
            self.message(f"eval step {step}: generation report {written[0]}")
        if self.rt.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def unsharded_copy(
    model: nn.Module, model_cfg: ModelConfig, device: torch.device, rank: int
) -> ChatUMM | None:
    """The training model's current weights as a plain ``ChatUMM`` for inference, on rank 0
    (None elsewhere). Every rank must call it: the full weights are gathered from the shards.
    Draws nothing from the global RNGs (the training run's random stream is left as it was)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    if rank != 0:
        return None
    with torch.device("meta"):
        copy = ChatUMM(model_cfg)
    copy.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        copy.init_weights()  # the fixed buffers; every weight is then loaded
    copy.load_state_dict(state)
    del state
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return prepare_model(copy, device, dtype)
