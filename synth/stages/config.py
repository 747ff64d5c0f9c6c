"""The typed, frozen configuration of one stage run: the CLI and the ``--config`` YAML fill it.

Precedence: a field given on the command line beats the YAML file, which beats the default. A
key of the YAML file that is not a field is an error naming the known keys (``num-shards`` and
``num_shards`` are the same key). The resolved config is saved in the output's manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ops.engine.config import (
    DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_BATCH_MAX_BYTES,
    DEFAULT_BATCH_MAX_REQUESTS,
    DEFAULT_BATCH_POLL_MAX_S,
    DEFAULT_BATCH_POLL_S,
    DEFAULT_BATCH_WINDOW_S,
    check_batch,
)
from taxonomy import TASKS

StageName = Literal["a", "b", "c"]
LLMName = Literal["template", "local", "openai", "gemini"]
DistractorKind = Literal["t2i", "vqa", "chat"]
Language = Literal["en", "zh"]


def _both_languages() -> dict[Language, float]:
    return {"en": 1.0, "zh": 1.0}


def _every_distractor_kind() -> dict[DistractorKind, float]:
    return {"t2i": 1.0, "vqa": 1.0, "chat": 1.0}


STAGE_A_TASKS: tuple[str, ...] = tuple(name for name, spec in TASKS.items() if spec.stage == "a")

# Fields that do not change what a run writes (how fast, where the cache is, how it looks, how far
# it goes, which part this process writes): a resumed run or another shard in the same out dir
# may differ in them. Every other field must match the manifests there.
_RUNTIME_FIELDS = frozenset(
    {
        "out",
        "concurrency",
        "rpm",
        "tpm",
        "progress",
        "cache_dir",
        "base_url",
        "api_key_env",
        "limit",
        "shard_index",
        "vertex",
        "project",
        "location",
        # Batch mode asks the same requests (same cache keys) as online, only later and cheaper:
        # a run may switch between the two on resume.
        "batch",
        "batch_max_requests",
        "batch_max_bytes",
        "batch_window_s",
        "batch_poll_s",
        "batch_poll_max_s",
    }
)


class RunConfig(BaseModel):
    """Every option of ``synth run stage-a|stage-b|stage-c``; see ``synth run stage-a --help``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    stage: StageName = "a"
    sources: Path | None = Field(
        default=None, description="sources file (stage a; stage b: distractor material)"
    )
    input: tuple[Path, ...] = Field(
        default=(),
        alias="in",
        description="output dir(s) of earlier stages, read in order (stage c: stage a and b)",
    )
    out: Path | None = None
    llm: LLMName = "template"
    model: str = Field(default="", description="empty: the backend's default model")
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="variable holding the API key")
    thinking_budget: int | None = Field(
        default=None, ge=-1, description="gemini 2.5: thinking tokens per answer; None: per model"
    )
    vertex: bool = Field(default=False, description="gemini through Vertex AI (ADC credentials)")
    project: str | None = Field(default=None, description="Vertex AI project id")
    location: str | None = Field(default=None, description="Vertex AI region")
    concurrency: int = Field(
        default=64,
        ge=1,
        description="LLM requests in flight; with batch: requests waiting in batches (default "
        f"{DEFAULT_BATCH_CONCURRENCY})",
    )
    batch: bool = Field(
        default=False,
        description="openai, gemini: send requests through the provider's batch API (half the "
        "price, answers within 24 h)",
    )
    batch_max_requests: int = Field(default=DEFAULT_BATCH_MAX_REQUESTS, ge=1)
    batch_max_bytes: int = Field(default=DEFAULT_BATCH_MAX_BYTES, ge=1)
    batch_window_s: float = Field(
        default=DEFAULT_BATCH_WINDOW_S,
        gt=0,
        description="a batch goes out this long after its first request, unless full before",
    )
    batch_poll_s: float = Field(
        default=DEFAULT_BATCH_POLL_S, gt=0, description="first wait before asking after a batch"
    )
    batch_poll_max_s: float = Field(default=DEFAULT_BATCH_POLL_MAX_S, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    seed: int = 0
    limit: int | None = Field(default=None, ge=1, description="work items of the whole run")
    num_shards: int = Field(default=1, ge=1)
    shard_index: int = Field(default=0, ge=0)
    cache_dir: Path | None = Field(default=None, description="default: <out>/.cache")
    shard_rows: int = Field(default=1000, ge=1, description="samples per Parquet shard")
    row_group_rows: int | None = Field(
        default=None, ge=1, description="samples per Parquet row group; None: the writer's default"
    )
    progress: bool = True
    languages: dict[Language, float] = Field(
        default_factory=_both_languages,
        description="weights of a dialogue's language (text copied from a source keeps its own)",
    )
    # stage a
    mix: dict[str, float] = Field(
        default_factory=dict, description="task -> weight over stage-a tasks; empty: uniform"
    )
    # stage b
    distractors: tuple[int, int] = Field(default=(1, 4), description="min, max distractor rounds")
    distractor_mix: dict[DistractorKind, float] = Field(default_factory=_every_distractor_kind)
    distractor_pool: int = Field(
        default=1000, ge=1, description="rows of each distractor kind held to draw from"
    )

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(STAGE_A_TASKS))
        if unknown:
            raise ValueError(f"mix names {unknown}; stage-a tasks are {list(STAGE_A_TASKS)}")
        _check_weights("mix", mix)
        return mix

    @field_validator("distractor_mix", "languages")
    @classmethod
    def _check_other_weights(cls, weights: dict[str, float], info: Any) -> dict[str, float]:
        _check_weights(info.field_name, weights)
        return weights

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(
                f"shard_index {self.shard_index} is not below num_shards {self.num_shards} "
                "(indices run 0..num_shards-1)"
            )
        lo, hi = self.distractors
        if not 1 <= lo <= hi:
            raise ValueError(f"distractors {lo}-{hi}: need 1 <= min <= max")
        if self.batch:
            check_batch(self.llm, vertex=self.vertex)
            if "concurrency" not in self.model_fields_set:
                object.__setattr__(self, "concurrency", DEFAULT_BATCH_CONCURRENCY)
        return self

    @property
    def task_weights(self) -> dict[str, float]:
        """Stage-a task -> weight; the default mix is uniform."""
        return (
            {t: self.mix.get(t, 0.0) for t in STAGE_A_TASKS}
            if self.mix
            else dict.fromkeys(STAGE_A_TASKS, 1.0)
        )

    @property
    def resolved_cache_dir(self) -> Path:
        assert self.out is not None
        return self.cache_dir if self.cache_dir is not None else self.out / ".cache"

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str | Path) else value

    def identity(self) -> dict[str, Any]:
        """The fields that decide what the run writes; a resume must not change them."""
        return {
            k: v
            for k, v in self.model_dump(mode="json", exclude=set(_RUNTIME_FIELDS)).items()
            if k not in ("sources", "input")
        }

    def public(self) -> dict[str, Any]:
        """The config as saved in the manifest: JSON types, no credentials in the base URL."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.base_url:
            parts = urlsplit(self.base_url)
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            data["base_url"] = urlunsplit(parts._replace(netloc=netloc))
        return data


def _check_weights(name: str, weights: Mapping[str, float]) -> None:
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"{name} weights must be >= 0, got {dict(weights)}")
    if weights and not any(w > 0 for w in weights.values()):
        raise ValueError(f"{name} has no positive weight: nothing could be chosen")


def load_run_config(
    stage: StageName, config_file: Path | None, overrides: Mapping[str, Any]
) -> RunConfig:
    """Defaults < YAML file < command line (``overrides`` holds only the options given)."""
    data: dict[str, Any] = {}
    if config_file is not None:
        data = _read_yaml(config_file)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["stage"] = stage
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        where = f" (from {config_file} and the command line)" if config_file else ""
        lines = []
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "config"
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = f"unknown key; known keys: {', '.join(_known_keys())}"
            lines.append(f"  {loc}: {msg}")
        raise ValueError(f"invalid run config{where}:\n" + "\n".join(lines)) from None


def _known_keys() -> list[str]:
    return sorted(f.alias or name for name, f in RunConfig.model_fields.items() if name != "stage")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must be a mapping of option: value")
    if "stage" in data:
        raise ValueError(f"config file {path}: `stage` comes from the command (synth run stage-X)")
    # Relative paths in the file are relative to the file, like the sources file's paths.
    base = Path(path).resolve().parent
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    for key in ("sources", "in", "input", "out", "cache_dir"):
        if isinstance(out.get(key), str):
            out[key] = str(base / out[key])
        elif isinstance(out.get(key), list):
            out[key] = [str(base / p) if isinstance(p, str) else p for p in out[key]]
    return out
