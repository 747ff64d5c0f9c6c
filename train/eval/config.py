"""The evaluation's configuration: which dialogues, which probes, how often during training.

The same ``EvalConfig`` is the ``eval`` section of the training config (``eval.every``) and the
options of ``python -m train eval``; a misspelt key is an error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taxonomy import TASKS


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(0, ge=0)
    """During training: run the probes every this many steps (0 = never)."""
    data: tuple[str, ...] = ()
    """Shard directories to evaluate. Empty during training = the held-out split
    (``data.overrides.holdout``) of the training data."""
    holdout: float | None = Field(None, gt=0, lt=1)
    """Evaluate only the sample ids ``train.data.sampling.held_out`` puts in this fraction;
    None = every sample of ``data`` (a directory that was never trained on)."""
    tasks: tuple[str, ...] = ()
    """Probe only these tasks; empty = every task of the taxonomy found in the data."""
    max_per_task: int = Field(32, ge=1)
    """Dialogues per task (a fixed, seeded choice, the same at every evaluation)."""
    timesteps: tuple[float, ...] = (0.3, 0.6, 0.9)
    """Noise levels t (after the model's timestep shift) of the flow-matching probes."""
    seed: int = Field(0, ge=0)
    """Seeds the dialogue choice, the donor turns, the noise and the bootstrap."""
    bootstrap: int = Field(1000, ge=1)
    """Bootstrap resamples of the dialogues for the 95% intervals."""
    pack_tokens: int | None = Field(None, ge=1)
    """Tokens per evaluation forward; None = the training pack. The history variants of one
    dialogue always share a forward (one longer than this gets a forward of its own)."""
    plot: bool = True
    """Write the PNG chart (needs matplotlib; during training only JSON and markdown)."""

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; the taxonomy's tasks are {sorted(TASKS)}")
        return value

    @field_validator("timesteps")
    @classmethod
    def _check_timesteps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("timesteps must name at least one noise level")
        for t in value:
            if not 0 < t < 1:
                raise ValueError(f"timestep {t} is not in (0, 1): t is the noise level")
        return value
