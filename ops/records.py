"""The records operations produce: the provenance of one LLM call, and a reject.

They live here, at the bottom of ``ops``, so that operations can build them without importing
the synthesis layer; ``synth.contract`` embeds ``LLMCall`` in a sample's provenance and stores
``Reject`` rows in the rejects table (its ``REJECT_SCHEMA``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LLMCall(BaseModel):
    """One LLM operation as the model saw and answered it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: str
    template_version: str
    backend: str = Field(description="openai | gemini | local | template")
    model: str
    language: str | None = Field(default=None, description="'en' or 'zh' of the chosen result")
    prompt: str = Field(description="the rendered prompt, exactly as sent")
    response: str = Field(description="the raw response text, exactly as received")
    results: tuple[str, ...] = Field(default=(), description="every parsed result")
    chosen: int | None = Field(default=None, description="index into results of the one used")
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Reject(BaseModel):
    """An input that did not become a sample, with the reason. Nothing is silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    reason: str = Field(description="short machine-readable code, e.g. 'parse:wrong-count'")
    detail: str = Field(description="what exactly was wrong, for a person")
    source: str = ""
    source_row: str = ""
    task: str = ""
    operation: str = ""
    sample_id: str = ""
    payload: str = Field(default="", description="the input as JSON, to retry or inspect")
    raw_response: str = ""
