"""Engine configuration: which backend and model, how hard to push it, where to cache, prices."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BackendName = Literal["template", "local", "openai", "gemini"]

# USD per million tokens, (input, output). Public list prices; extend or override with
# ``EngineConfig(prices={...})`` (a model missing from both costs 0 and is reported as unpriced).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-pro": (1.25, 10.00),  # prompts up to 200k tokens; output includes thinking
    # Offline backends cost nothing.
    "template-v1": (0.0, 0.0),
    "smollm2-135m": (0.0, 0.0),
}
# Both providers bill a request sent through their batch API at half the list price, input and
# output alike (OpenAI Batch API; Gemini API batch mode): ``EngineConfig.price_table`` applies
# it to the whole table, ``prices`` overrides included, when ``batch`` is on.
BATCH_PRICE_FACTOR = 0.5

# Batch mode (ops.engine.batch): how requests are gathered into batches and how often a batch
# is asked after. A batch takes minutes to hours, so gathering for 30 s costs nothing; polling
# starts at 15 s and backs off 1.5x per poll to 5 minutes.
DEFAULT_BATCH_WINDOW_S = 30.0
DEFAULT_BATCH_POLL_S = 15.0
DEFAULT_BATCH_POLL_MAX_S = 300.0
DEFAULT_BATCH_MAX_REQUESTS = 50_000  # OpenAI's limit per batch
DEFAULT_BATCH_MAX_BYTES = 200_000_000  # OpenAI's limit per input file ("200 MB")
# Requests a batch run keeps waiting at once (``concurrency`` in batch mode, unless set): the
# stage builds twice as many items at a time, each holding its images in memory.
DEFAULT_BATCH_CONCURRENCY = 2048
BATCH_BACKENDS = ("openai", "gemini")

# A network backend's answers go back to the operations in batches, this far apart at most
# (ops.engine.engine says why).
DEFAULT_COALESCE_S = 0.02

_DEFAULT_MODEL: dict[str, str] = {
    "template": "template-v1",
    "local": "smollm2-135m",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.0-flash",
}
_DEFAULT_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


MIN_SECRET_CHARS = 8


class EngineConfig(BaseModel):
    """Everything the engine needs; API keys are never here, only the *name* of their variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = "template"
    model: str = ""  # empty: the backend's default (see _DEFAULT_MODEL)
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None,
        description="environment variable holding the API key; default OPENAI_API_KEY, "
        "or GEMINI_API_KEY then GOOGLE_API_KEY",
    )
    concurrency: int = Field(default=64, ge=1)
    rpm: float | None = Field(
        default=None, gt=0, description="requests per minute; None = no limit"
    )
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute; None = no limit")
    max_retries: int = Field(default=8, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    cache_dir: Path | None = None
    prices: dict[str, tuple[float, float]] = {}
    thinking_budget: int | None = Field(
        default=None,
        ge=-1,
        description="gemini: thinking tokens per answer (-1 dynamic, 0 off where the model "
        "allows it); None: the model family's default (ops.engine.gemini_backend)",
    )
    vertex: bool = Field(default=False, description="gemini through Vertex AI (ADC credentials)")
    project: str | None = Field(default=None, description="Vertex AI: Google Cloud project id")
    location: str | None = Field(default=None, description="Vertex AI: region, e.g. us-central1")
    batch: bool = Field(
        default=False,
        description="openai, gemini: send requests through the provider's batch API, at half "
        "the price, answers within 24 h (ops.engine.batch)",
    )
    batch_max_requests: int = Field(
        default=DEFAULT_BATCH_MAX_REQUESTS, ge=1, description="batch mode: requests per batch"
    )
    batch_max_bytes: int = Field(
        default=DEFAULT_BATCH_MAX_BYTES, ge=1, description="batch mode: bytes per batch file"
    )
    batch_window_s: float = Field(
        default=DEFAULT_BATCH_WINDOW_S,
        gt=0,
        description="batch mode: a batch goes out this long after its first request, if it "
        "has not filled up before",
    )
    batch_poll_s: float = Field(
        default=DEFAULT_BATCH_POLL_S, gt=0, description="batch mode: first wait before asking"
    )
    batch_poll_max_s: float = Field(
        default=DEFAULT_BATCH_POLL_MAX_S, gt=0, description="batch mode: longest wait between asks"
    )
    coalesce_s: float | None = Field(
        default=None,
        ge=0,
        description="hand answers back to the operations in batches, every this many seconds "
        "(ops.engine.engine explains why); None: 0.02 for the network backends, 0 for template",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> EngineConfig:
        if self.vertex and self.backend != "gemini":
            raise ValueError("vertex is an option of the gemini backend (--llm gemini --vertex)")
        if self.batch:
            check_batch(self.backend, vertex=self.vertex)
            if "concurrency" not in self.model_fields_set:
                object.__setattr__(self, "concurrency", DEFAULT_BATCH_CONCURRENCY)
        if not self.model:
            object.__setattr__(self, "model", _DEFAULT_MODEL[self.backend])
        if self.coalesce_s is None:
            coalesce = 0.0 if self.backend == "template" else DEFAULT_COALESCE_S
            object.__setattr__(self, "coalesce_s", coalesce)
        return self

    @property
    def price_table(self) -> dict[str, tuple[float, float]]:
        """USD per million tokens (input, output) as this run is billed: batch mode at
        ``BATCH_PRICE_FACTOR`` of the list price."""
        table = {**DEFAULT_PRICES, **self.prices}
        if not self.batch:
            return table
        f = BATCH_PRICE_FACTOR
        return {model: (i * f, o * f) for model, (i, o) in table.items()}

    def key_env_names(self) -> tuple[str, ...]:
        if self.api_key_env:
            return (self.api_key_env,)
        return _DEFAULT_KEY_ENV.get(self.backend, ())

    def key_source(self) -> str:
        """The variable the key is read from (the first one set), for messages about the key."""
        import os

        names = self.key_env_names()
        return next((n for n in names if os.environ.get(n)), " or ".join(names) or "the key")

    def secrets(self) -> tuple[str, ...]:
        """The values of every API-key variable this config or any backend reads, for
        redaction (``ops.engine.errors.redact``). Values under ``MIN_SECRET_CHARS`` are not
        secrets (a local server's conventional ``EMPTY``) and are left alone, so that answers
        that happen to contain such a word are not rewritten."""
        import os

        names = {*self.key_env_names(), *(n for ns in _DEFAULT_KEY_ENV.values() for n in ns)}
        values = {os.environ.get(name, "") for name in sorted(names)}
        return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len)[::-1])

    def api_key(self, *, required: bool) -> str | None:
        """Read the key from the environment at the moment a client is built; never stored."""
        import os

        for name in self.key_env_names():
            value = os.environ.get(name)
            if value:
                return value
        if required:
            names = " or ".join(self.key_env_names())
            raise ValueError(f"backend {self.backend!r} needs an API key: set {names}.")
        return None


def check_batch(backend: str, *, vertex: bool) -> None:
    """Batch mode's one-line errors for a backend that has no batch API here."""
    if backend not in BATCH_BACKENDS:
        raise ValueError(
            f"--batch sends requests through a provider's batch API: use --llm openai (or an "
            f"OpenAI-compatible --base-url that serves /v1/files and /v1/batches) or --llm "
            f"gemini, not {backend}"
        )
    if vertex:
        raise ValueError(
            "--batch goes through the Gemini API's batch mode (an API key); Vertex AI batch "
            "prediction reads from Cloud Storage or BigQuery and is not supported: drop --vertex "
            "or --batch"
        )
