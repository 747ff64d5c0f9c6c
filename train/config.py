"""The training configuration: typed, frozen, validated; a misspelt key is an error.

One YAML file maps onto ``TrainConfig`` section by section. The model and data sections are
resolved into the model's ``ModelConfig`` and the loader's ``DataConfig`` (their owners validate
their own fields); the resolved whole is written next to every checkpoint, so a run can always
say exactly what it trained.

Defaults are the paper's (section 4.1): AdamW (0.9, 0.95), eps 1e-15, no weight decay, clip 1.0,
200 warmup steps then a constant 2e-5, CE:MSE = 1:1, EMA off, HYBRID_SHARD with num_shard 32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from train.eval.config import EvalConfig

FreezeTarget = Literal["llm", "vit", "understanding_expert"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    preset: Literal["tiny", "small_100m", "base_1b", "bagel_7b"] = "tiny"
    """Architecture preset; ignored when ``--init-from`` reads the architecture from BAGEL."""
    overrides: dict[str, Any] = {}
    """Fields of ``ModelConfig`` replaced on the preset (``dataclasses.replace``)."""


class DataSection(_Section):
    preset: Literal["tiny", "bagel"] = "tiny"
    """``DataConfig.tiny()`` (test sizes) or ``DataConfig.bagel()`` (the paper's 64k packs)."""
    overrides: dict[str, Any] = {}
    """Fields of ``train.data.DataConfig`` replaced on the preset. The fields that must agree
    with the model (patch and latent grids) are filled from the model config."""


class OptimConfig(_Section):
    lr: float = Field(2e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-15, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(200, ge=0)
    """Linear warmup from 0 to ``lr`` over this many updates, then constant."""
    grad_clip: float = Field(1.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(1.0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    """Keep an exponential moving average of the weights with this decay; None = off (paper)."""
    freeze: tuple[FreezeTarget, ...] = ()
    """Parts that do not train (the VAE never does)."""


class ParallelConfig(_Section):
    num_shard: int | None = Field(None, ge=1)
    """Ranks per FSDP shard group (HYBRID_SHARD: replicate across groups). None = all ranks."""
    mixed_precision: Literal["bf16", "fp32"] = "bf16"
    """bf16 params/compute with fp32 gradient reduction, or fp32 throughout (the CPU default)."""
    activation_checkpointing: Literal["full", "selective", "off"] = "full"
    """Per transformer block: ``full`` recomputes the whole block in backward, ``selective``
    keeps the matmul and attention outputs and recomputes the rest (norms, activations, RoPE),
    ``off`` keeps everything (``train.parallelize``). YAML ``true``/``false`` mean full/off."""
    compile: bool = False
    """``torch.compile`` each transformer block, with dynamic shapes (one graph for every pack
    length; the metrics' ``compiles`` counts what compiles after all)."""
    attention: Literal["sdpa", "flex"] = "sdpa"
    """``flex`` (FlexAttention, CUDA) or ``sdpa`` with a dense mask (CPU: flex has no backward)."""

    @field_validator("activation_checkpointing", mode="before")
    @classmethod
    def _checkpointing_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "full" if value else "off"
        return value


class CheckpointConfig(_Section):
    every: int = Field(500, ge=1)
    keep: int = Field(3, ge=1)
    """Complete checkpoints to keep; older ones are deleted after a newer one is complete."""
    save_final: bool = True
    """Save at ``max_steps`` (off for throughput benchmarks)."""


class LogConfig(_Section):
    every: int = Field(1, ge=1)
    tensorboard: bool = True
    """Also write TensorBoard event files when ``tensorboard`` is installed."""
    progress: bool = True
    peak_tflops: float | None = Field(None, gt=0)
    """Peak dense bf16 TFLOP/s of one accelerator for MFU; None = look the device up."""


class TrainConfig(_Section):
    seed: int = 0
    max_steps: int = Field(1000, ge=1)
    grad_accum: int = Field(1, ge=1)
    """Packs per rank per optimizer step."""
    max_nonfinite: int = Field(10, ge=0)
    """Stop after this many steps skipped for a NaN/inf loss or gradient norm."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tokenizer: str | None = None
    """tokenizer.json (or its directory). None = the ``--init-from`` directory's tokenizer.json,
    else the small tokenizer shipped in train/assets. A resumed run uses its checkpoint's."""
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimConfig = OptimConfig()
    parallel: ParallelConfig = ParallelConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    eval: EvalConfig = EvalConfig()
    """Context probes every ``eval.every`` steps on held-out data (``train.eval``); off by default."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.parallel.attention == "flex" and self.device == "cpu":
            raise ValueError(
                "parallel.attention 'flex' has no backward on CPU; use 'sdpa' for CPU training"
            )
        holdout = self.data.overrides.get("holdout", 0)
        if self.eval.every and not self.eval.data and not holdout:
            raise ValueError(
                "eval.every needs held-out data: set eval.data (shard directories never trained "
                "on) or data.overrides.holdout (a fraction of the training data kept out)"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML config; ``overrides`` (top-level keys) win over the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: the top level must be a mapping of config sections")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ValueError(f"{path}: invalid training config:\n{err}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
