"""The small protocol between operations and LLM backends: ``complete(request) -> response``.

Operations (``ops``) render a template into an ``LLMRequest``; a ``Backend`` (openai, gemini,
local, template) answers it with an ``LLMResponse``; the engine wraps any backend with bounded
concurrency, rate limits, retries, the response cache and token/cost accounting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.9
    top_p: float = 0.95
    max_tokens: int = 1024
    # Sampling seed sent to servers that accept one. A retry after a rejected response uses a
    # new attempt number, hence a new seed and a new cache key: a fresh sample, not a cache hit.
    seed: int = 0
    attempt: int = 0


@dataclass(frozen=True)
class LLMRequest:
    operation: str
    messages: tuple[Message, ...]
    params: GenerationParams = GenerationParams()
    # The operation's declared inputs. Never sent to a server; the `template` backend fills its
    # answer from them, and they make rejects inspectable.
    variables: Mapping[str, Any] = field(default_factory=dict)


FinishReason = Literal["stop", "length", "content_filter", "error"]


@dataclass(frozen=True)
class LLMResponse:
    text: str
    finish_reason: FinishReason
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0  # the answer's tokens
    # Tokens a thinking model spent before answering (Gemini 2.5): billed as output, counted
    # against TPM, never part of ``text``.
    thinking_tokens: int = 0


class Backend(Protocol):
    """A model behind an API. ``name`` is openai | gemini | local | template.

    ``max_concurrency``: requests the backend can serve at once (a local server's slots), or
    None for no limit of its own; the engine never sends more than that, whatever its config.
    """

    name: str
    model: str

    @property
    def max_concurrency(self) -> int | None: ...

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...
