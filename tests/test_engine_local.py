"""The offline ``local`` backend end to end: SmolLM2-135M in-process behind llama.cpp's server.

A 135M model fails most validators; what is checked is the plumbing and the reasons, never
its wording: every call reaches the model over HTTP with the operation's grammar, every outcome
is a result or a named rejection (never a parse failure: the grammar fixes the layout), and the
engine accounts for every token. The grammars themselves are checked without the model.
"""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from ops import run_op
from ops.backends import open_engine
from ops.engine import Engine, EngineConfig
from ops.local_backend import RESULT_CHARS, answer_grammar, local_available
from ops.protocol import GenerationParams
from ops.registry import OPS as REGISTRY
from tests.ops_cases import INPUTS

needs_model = pytest.mark.skipif(
    local_available() is not None, reason=f"local backend unavailable: {local_available()}"
)
REASON = re.compile(r"^(llm|parse|validate):[a-z-]+$")
OPS = ("A_from_caption", "Q_from_caption")  # the shortest prompts: prefill dominates on a CPU


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_each_operation_has_a_grammar_of_its_answer_layout(op: str) -> None:
    spec = REGISTRY[op]
    for language in ("en", "zh"):
        grammar = answer_grammar(op, {**INPUTS[op], "language": language})
        root = grammar.splitlines()[0]
        assert root.startswith("root ::= ") and root.count('"<Result>"') == spec.results
        for tag in spec.tags:
            assert root.count(f'"<{tag}>"') == spec.results * spec.tags.count(tag)
        languages = spec.languages_of({**INPUTS[op], "language": language})
        for lang, slot in zip(languages, spec.slots, strict=True):
            low, high = RESULT_CHARS[(lang, slot.length)]
            assert f"{{{low - 1},{high - 1}}}" in grammar
        # Chinese results may hold no Latin letter, English ones no CJK character.
        assert ("A-Za-z" in grammar) == ("zh" in languages)
        assert ("u4e00-" in grammar) and (r"[\u4e00-\u9fff]" in grammar) == ("zh" in languages)


@needs_model
def test_a_few_operations_through_the_embedded_model() -> None:
    async def run() -> tuple[list, Engine]:
        async with open_engine(EngineConfig(backend="local", timeout_s=120)) as engine:
            params = GenerationParams(max_tokens=48, temperature=0.7)
            results = [
                await run_op(
                    engine, op, INPUTS[op], random.Random(i), max_attempts=1, params=params
                )
                for i, op in enumerate(OPS)
            ]
            return results, engine

    results, engine = asyncio.run(run())
    usage = engine.stats.total
    assert usage.requests == len(OPS) and usage.errors == 0
    assert usage.prompt_tokens > 200 * len(OPS) and usage.completion_tokens > 0
    assert usage.cost_usd == 0 and engine.stats.unpriced == set()
    for op, result in zip(OPS, results, strict=True):
        assert result.operation == op and result.attempts == 1
        if result.ok:
            assert result.call is not None and result.call.backend == "local"
            assert result.call.model == "smollm2-135m"
        else:
            assert REASON.match(result.reason or ""), result.reason
            assert not (result.reason or "").startswith("parse:"), result.detail
            assert result.detail
    print({op: r.reason or "ok" for op, r in zip(OPS, results, strict=True)})
