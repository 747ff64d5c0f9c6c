"""Run one operation: render, complete, parse, validate, retry; return a result or a reject.

``run_op`` works with anything that has ``async complete(request) -> LLMResponse``: a bare
backend or the engine that wraps one with concurrency, rate limits, retries and the cache.
Failures never raise: a truncated or filtered completion, an unparseable or invalid answer is
retried with the next attempt number (a fresh sample, a new cache key) up to ``max_attempts``;
an exception that survived the engine's own retries is not retried here. Either way the result
carries a reason code and turns into an ``ops.records.Reject`` row with ``to_reject``.
Only programmer and configuration errors raise: an unknown operation, misspelt or missing input
keys, a ``language`` the operation has no result in, and a backend's ``BackendConfigError`` (a
bad key, an unknown model: every other operation would fail the same way).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, Protocol

from pydantic import ValidationError

from ops.engine.errors import BackendConfigError
from ops.parse import ParseRejection
from ops.protocol import GenerationParams, LLMRequest, LLMResponse
from ops.records import LLMCall, Reject
from ops.registry import OPS, OpSpec, Output, QAResult, TextResult
from ops.validate import Language

LLM_TRUNCATED = "llm:truncated"
LLM_CONTENT_FILTER = "llm:content-filter"
LLM_ERROR = "llm:error"
INPUT_INVALID = "input:invalid"
_FINISH_REASONS = {
    "length": LLM_TRUNCATED,
    "content_filter": LLM_CONTENT_FILTER,
    "error": LLM_ERROR,
}
# Input errors that are the caller's bug (a wrong key), as opposed to a bad value in a data row.
_CALLER_ERRORS = {"missing", "extra_forbidden"}


class Completer(Protocol):
    """What ``run_op`` needs of a backend or the engine: a name for provenance (an engine bears
    its backend's) and ``complete``."""

    name: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


def prompt_text(request: LLMRequest) -> str:
    """The prompt as sent: a single message is its content; several are ``[role]``-headed blocks."""
    if len(request.messages) == 1:
        return request.messages[0].content
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in request.messages)


@dataclass(frozen=True)
class OpResult:
    """An operation's outcome: ``ok`` with output and the chosen result, or a reason to reject.

    ``chosen`` indexes ``output.results``; ``call.chosen`` indexes the flat ``call.results``
    (every field of every result in order; for caption2QA_q each result is question, answer,
    request, and ``call.chosen`` points at the request).
    """

    operation: str
    inputs: Mapping[str, Any]
    attempts: int
    prompt_tokens: int = 0  # summed over every attempt, for cost accounting
    completion_tokens: int = 0
    output: Output | None = None
    chosen: int | None = None
    call: LLMCall | None = None
    reason: str | None = None
    detail: str | None = None
    raw_response: str = ""

    @property
    def ok(self) -> bool:
        return self.output is not None

    @property
    def item(self) -> TextResult | QAResult:
        assert self.output is not None and self.chosen is not None, f"{self.reason}: {self.detail}"
        return self.output.results[self.chosen]

    @property
    def text(self) -> str:
        item = self.item
        return item.request if isinstance(item, QAResult) else item.text

    @property
    def language(self) -> Language:
        return self.item.language

    def to_reject(
        self,
        stage: str,
        source: str = "",
        source_row: str = "",
        task: str = "",
        sample_id: str = "",
        payload: str | None = None,
    ) -> Reject:
        assert not self.ok, "only a failed operation becomes a reject"
        return Reject(
            stage=stage,
            reason=self.reason or LLM_ERROR,
            detail=self.detail or "",
            source=source,
            source_row=source_row,
            task=task,
            operation=self.operation,
            sample_id=sample_id,
            payload=payload
            if payload is not None
            else json.dumps(dict(self.inputs), ensure_ascii=False),
            raw_response=self.raw_response,
        )


async def run_op(
    backend: Completer,
    op_name: str,
    inputs: Mapping[str, Any],
    rng: random.Random,
    *,
    max_attempts: int = 3,
    language: Language | None = None,
    params: GenerationParams | None = None,
) -> OpResult:
    """Run ``op_name`` on ``inputs``; ``rng`` picks the sentence structures, seed and result.

    ``language`` restricts the chosen result to that language (a dialogue keeps one language).
    """
    if op_name not in OPS:
        raise ValueError(f"unknown operation {op_name!r}; operations: {sorted(OPS)}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    spec = OPS[op_name]
    try:
        model = spec.inputs.model_validate(dict(inputs))
    except ValidationError as err:
        if any(e["type"] in _CALLER_ERRORS for e in err.errors()):
            raise ValueError(
                f"operation {op_name!r} takes {sorted(spec.inputs.model_fields)}: {err}"
            ) from err
        return OpResult(op_name, dict(inputs), 0, reason=INPUT_INVALID, detail=str(err))
    values = model.model_dump()  # once: rendering, parsing and the result read it
    languages = spec.languages_of(values)
    eligible = (
        list(range(len(languages)))
        if language is None
        else [i for i, lang in enumerate(languages) if lang == language]
    )
    if not eligible:
        raise ValueError(f"operation {op_name!r} has no result in language {language!r}")

    return await _attempts(
        backend, spec, values, rng, languages, eligible, max_attempts=max_attempts, params=params
    )


async def _attempts(
    backend: Completer,
    spec: OpSpec,
    values: dict[str, Any],
    rng: random.Random,
    languages: tuple[Language, ...],
    eligible: list[int],
    *,
    max_attempts: int,
    params: GenerationParams | None,
) -> OpResult:
    """Render the request, then ask up to ``max_attempts`` times for an answer that parses."""
    op_name = spec.name
    seed = rng.getrandbits(31)
    base = (
        GenerationParams(max_tokens=spec.max_tokens, seed=seed)  # dataclasses.replace is slow
        if params is None
        else replace(params, seed=seed, attempt=0)
    )
    request = spec.render_values(values, rng, base)
    prompt_tokens = completion_tokens = 0
    failures: list[str] = []
    reason, raw = LLM_ERROR, ""
    for attempt in range(max_attempts):
        sent = request if attempt == 0 else replace(request, params=replace(base, attempt=attempt))
        try:
            response = await backend.complete(sent)
        except BackendConfigError:
            raise  # every other request would fail the same way: the run stops
        except Exception as err:  # the engine has already retried what is retryable
            failures.append(f"attempt {attempt + 1}: {LLM_ERROR} {type(err).__name__}: {err}")
            reason = LLM_ERROR
            break
        prompt_tokens += response.prompt_tokens
        completion_tokens += response.completion_tokens
        raw = response.text
        if response.finish_reason != "stop":
            reason = _FINISH_REASONS.get(response.finish_reason, LLM_ERROR)
            failures.append(
                f"attempt {attempt + 1}: {reason} finish_reason={response.finish_reason}"
            )
            continue
        try:
            output = spec.parse_values(response.text, values)
        except ParseRejection as rejection:
            reason = rejection.reason
            failures.append(f"attempt {attempt + 1}: {reason} {rejection.detail}")
            continue
        chosen = rng.choice(eligible)
        width = len(spec.fields)
        results = tuple(chain.from_iterable(item.texts for item in output.results))
        call = LLMCall(
            operation=op_name,
            template_version=spec.template_version,
            backend=backend.name,
            model=response.model,
            language=languages[chosen],
            prompt=prompt_text(sent),
            response=response.text,
            results=results,
            chosen=chosen * width + width - 1,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
        )
        return OpResult(
            op_name, values, attempt + 1, prompt_tokens, completion_tokens,
            output=output, chosen=chosen, call=call,
        )  # fmt: skip
    return OpResult(
        op_name, values, len(failures), prompt_tokens, completion_tokens,
        reason=reason, detail="; ".join(failures), raw_response=raw,
    )  # fmt: skip
