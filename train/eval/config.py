"""The evaluation's configuration: which dialogues, which probes, how often during training.

The same ``EvalConfig`` is the ``eval`` section of the training config (``eval.every``) and the
options of ``python -m train eval``; a misspelt key is an error. ``eval.generation`` configures
the generation report (``train.eval.generation``), off unless ``per_task`` is set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from taxonomy import TASKS
from train.infer.options import ImageOptions, TextOptions


class GenerationConfig(BaseModel):
    """How the final turns of the generation report are sampled (``train.infer`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_task: int = Field(0, ge=0)
    """Dialogues per task whose final turn is generated (0 = no generation report): the first
    ``per_task`` of the probes' own seeded choice."""
    every: int = Field(0, ge=0)
    """During training: generate at the evaluations whose step is a multiple of this
    (0 = at every evaluation). A multiple of ``eval.every``."""
    mode: Literal["auto", "image", "text"] = "auto"
    """auto: the model decides to draw or talk (its intent is part of what is judged)."""
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_parts: int = Field(3, ge=1)
    think: bool = False
    image: dict[str, Any] = Field(default_factory=dict)
    """``ImageOptions`` fields over BAGEL's defaults (``steps``, ``cfg_text_scale``, ...)."""

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in dataclasses.fields(ImageOptions)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown image options {unknown}; known: {sorted(known)}")
        # coerced and checked as ImageOptions itself checks them (YAML lists become tuples)
        options = TypeAdapter(ImageOptions).validate_python(
            {**dataclasses.asdict(ImageOptions()), **value}
        )
        return {k: getattr(options, k) for k in value}

    def chat_options(self) -> dict[str, Any]:
        """The keyword arguments of ``train.infer.Chat`` these options stand for."""
        return {
            "text": TextOptions(self.max_tokens, self.temperature, self.top_p),
            "image_overrides": dict(self.image),
            "max_parts": self.max_parts,
            "think": self.think,
        }


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
    generation: GenerationConfig = GenerationConfig()
    """The generation report: the final turns sampled and shown beside the references."""

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

    @model_validator(mode="after")
    def _check_generation(self) -> EvalConfig:
        g = self.generation.every
        if g and (not self.every or g % self.every):
            raise ValueError(
                f"eval.generation.every ({g}) must be a multiple of eval.every ({self.every}): "
                "the report is generated at an evaluation"
            )
        return self
