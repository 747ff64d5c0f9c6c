"""Every operation rendered, sent over HTTP through the openai and gemini backends (and the
template backend), parsed and validated; faults survived; a rerun served from the cache."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from ops import OPS, OpResult, run_op
from ops.backends import open_engine
from ops.engine import Engine, EngineConfig
from tests.fakes._server import FakeServer, FaultPlan
from tests.fakes.fake_openai import FakeOpenAI
from tests.ops_cases import INPUTS

NAMES = sorted(OPS)


@pytest.fixture
def server(llm_server: FakeServer) -> FakeServer:
    return llm_server


def _config(server: FakeServer, cache: Path) -> EngineConfig:
    openai = isinstance(server, FakeOpenAI)
    return EngineConfig(
        backend="openai" if openai else "gemini",
        model="gpt-4o-mini" if openai else "gemini-2.0-flash",
        base_url=server.base_url if isinstance(server, FakeOpenAI) else server.url,
        api_key_env="CHATUMM_TEST_KEY",
        cache_dir=cache,
        timeout_s=1.0,
    )


async def _run_ops(config: EngineConfig) -> tuple[list[OpResult], Engine]:
    engine = open_engine(config)
    try:
        results = await asyncio.gather(
            *(run_op(engine, op, INPUTS[op], random.Random(i)) for i, op in enumerate(NAMES))
        )
    finally:
        await engine.aclose()
    return list(results), engine


def _check(results: list[OpResult], backend: str) -> None:
    for op, result in zip(NAMES, results, strict=True):
        assert result.ok, (op, result.reason, result.detail)
        spec, call = OPS[op], result.call
        assert call is not None and (call.operation, call.backend) == (op, backend)
        assert len(result.output.results) == spec.results  # type: ignore[union-attr]
        assert call.results[call.chosen] == result.text
        assert call.response.count("<Result>") == spec.results


def test_every_operation_end_to_end(server: FakeServer, tmp_path: Path) -> None:
    results, engine = asyncio.run(_run_ops(_config(server, tmp_path)))
    backend = "openai" if isinstance(server, FakeOpenAI) else "gemini"
    _check(results, backend)
    assert len(server.log) == len(NAMES) and all(r.attempts == 1 for r in results)
    assert set(engine.stats.by_operation) == set(NAMES)
    # The prompts the server received are the ones provenance records.
    assert {_prompt(r.body) for r in server.log} == {r.call.prompt for r in results if r.call}

    # A second identical run issues zero requests and gives the same calls.
    server.reset_log()
    again, engine = asyncio.run(_run_ops(_config(server, tmp_path)))
    assert server.log == [] and engine.stats.total.cache_hits == len(NAMES)
    assert [r.call for r in again] == [r.call for r in results]


def _prompt(body: dict[str, object]) -> str:
    if "messages" in body:  # OpenAI wire format
        return body["messages"][0]["content"]  # type: ignore[index,no-any-return]
    return body["contents"][0]["parts"][0]["text"]  # type: ignore[index,no-any-return]


def test_every_operation_through_the_engine_on_the_template_backend(tmp_path: Path) -> None:
    config = EngineConfig(backend="template", cache_dir=tmp_path)
    results, engine = asyncio.run(_run_ops(config))
    _check(results, "template")
    assert engine.stats.total.requests == len(NAMES) and engine.stats.total.cost_usd == 0
    assert engine.stats.unpriced == set()


def test_every_operation_survives_faults(server: FakeServer, tmp_path: Path) -> None:
    first = ("429", "500", "timeout", "length", "429", "500", "length", "timeout")
    server.set_faults(FaultPlan(first=first, share={"429": 0.1}, retry_after_s=0.1, hang_s=3))
    results, engine = asyncio.run(_run_ops(_config(server, tmp_path)))
    backend = "openai" if isinstance(server, FakeOpenAI) else "gemini"
    _check(results, backend)
    total = engine.stats.total
    assert total.truncated == 2 and total.rate_limited >= 2 and total.errors == 0
    # Truncated answers were asked again by run_op with a new attempt (a new sample).
    assert sum(r.attempts for r in results) == len(NAMES) + 2
