"""A 200 that is not an answer is retried like a 5xx; an API key a server quotes back never
reaches a stored or printed text. Both at the engine and through stages a -> b -> c."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ops.backends import open_engine
from ops.engine import BackendConfigError, Engine, EngineConfig
from ops.engine.openai_backend import OpenAIBackend
from ops.protocol import GenerationParams, LLMRequest, Message
from synth.shards import iter_samples, read_manifest
from tests.fakes._server import MALFORMED, FakeRequest, Fault, FaultPlan
from tests.fakes.fake_openai import FakeOpenAI
from tests.stages_support import EXAMPLES, op_answer, run_stage

KEY = "sk-test-5c1d9e2f7a3b4860-quoted-back"


def _request(i: int) -> LLMRequest:
    return LLMRequest("op", (Message("user", f"item {i}"),), GenerationParams(seed=i))


def _answer(request: FakeRequest) -> str:
    return f"answer to {request.messages[-1][1]}"


def _config(server: FakeOpenAI, tmp_path: Path, **overrides: object) -> EngineConfig:
    fields: dict[str, object] = {
        "backend": "openai",
        "base_url": server.base_url,
        "api_key_env": "CHATUMM_TEST_KEY",
        "cache_dir": tmp_path / "cache",
        "timeout_s": 5.0,
    }
    return EngineConfig.model_validate({**fields, **overrides})


@pytest.mark.parametrize("client", ["http", "sdk"])
@pytest.mark.parametrize("fault", MALFORMED)
def test_a_malformed_200_is_retried(
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
    client: str,
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.answer = _answer
    fake_openai.set_faults(FaultPlan(first=(fault, fault)))
    config = _config(fake_openai, tmp_path)

    async def run() -> Engine:
        backend = OpenAIBackend(config, client="sdk") if client == "sdk" else OpenAIBackend(config)
        async with Engine(backend, config) as engine:
            response = await engine.complete(_request(0))
            assert (response.finish_reason, response.text) == ("stop", "answer to item 0")
            return engine

    engine = asyncio.run(run())
    assert engine.stats.total.retries == 2 and engine.stats.total.errors == 0


def _leaky_run(server: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Engine:
    server.answer = lambda request: f"{_answer(request)}; I was called with {KEY}"
    server.set_faults(FaultPlan(first=("leak500", "leak400", "leak500", "leak500")))
    caplog.set_level(logging.DEBUG)
    config = _config(server, tmp_path, max_retries=1)

    async def run() -> Engine:
        async with open_engine(config) as engine:
            out = [await engine.complete(_request(i)) for i in range(4)]
        # leak500 then leak400: a retry, then a bad request; leak500 twice: retries exhausted;
        # the last request and the first retry are answered (with the key echoed in the text).
        assert [r.finish_reason for r in out] == ["error", "error", "stop", "stop"]
        for response in out:
            assert KEY not in response.text
        assert "[redacted]" in out[0].text and "[redacted]" in out[3].text
        return engine

    return asyncio.run(run())


def test_a_quoted_key_is_redacted_from_answers_errors_logs_and_the_cache(
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.api_key = KEY
    _leaky_run(fake_openai, tmp_path, caplog)
    assert any(KEY in str(r.body) or KEY in str(r.headers) for r in fake_openai.log)
    assert "failed for good" in caplog.text and KEY not in caplog.text
    for path in (tmp_path / "cache").iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_a_refused_key_stops_with_a_message_that_does_not_repeat_it(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.api_key = "sk-the-right-one-0000000000"

    async def run() -> None:
        async with open_engine(_config(fake_openai, tmp_path)) as engine:
            await engine.complete(_request(0))

    with pytest.raises(BackendConfigError) as caught:
        asyncio.run(run())
    assert "HTTP 401" in str(caught.value) and KEY not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def _abc(tmp_path: Path, server: FakeOpenAI, **options: object) -> list[Path]:
    llm = {"llm": "openai", "base_url": server.base_url, "api_key_env": "CHATUMM_TEST_KEY"}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_stage("a", sources=EXAMPLES, out=a, limit=12, **llm, **options)
    run_stage("b", **{"in": a}, out=b, **llm, **options)
    run_stage("c", **{"in": [a, b]}, out=c, **llm, **options)
    return [a, b, c]


def test_stages_under_30_percent_malformed_200s_keep_every_sample(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.answer = op_answer
    clean = _abc(tmp_path / "clean", fake_openai)
    clean_requests = len(fake_openai.log)
    shares: dict[Fault, float] = {"badjson": 0.1, "nochoices": 0.1, "notutf8": 0.1}
    fake_openai.set_faults(FaultPlan(share=shares, seed=3, keyed=True))
    fake_openai.log.clear()
    faulty = _abc(tmp_path / "faulty", fake_openai)
    faults = [r.fault for r in fake_openai.log if r.fault != "ok"]
    assert len(faults) > 20 and set(faults) == set(MALFORMED)
    for want, got in zip(clean, faulty, strict=True):
        assert list(iter_samples(got)) == list(iter_samples(want))
        assert not read_manifest(got).reject_counts
    # Each malformed answer cost exactly one more request: asked again, never given up on.
    assert len(fake_openai.log) == clean_requests + len(faults)


def _texts_of(path: Path) -> str:
    """Everything a reader of ``path`` can see: Parquet decoded, any other file as bytes."""
    if path.suffix == ".parquet":
        return repr(pq.read_table(path).to_pylist())
    return path.read_bytes().decode("utf-8", errors="replace")


def test_a_key_quoted_in_error_bodies_is_in_no_file_and_no_log(
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.api_key = KEY
    fake_openai.answer = op_answer
    caplog.set_level(logging.DEBUG)
    shares: dict[Fault, float] = {"leak400": 0.25, "leak500": 0.15}
    fake_openai.set_faults(FaultPlan(share=shares, seed=5, keyed=True, retry_after_s=None))
    outs = _abc(tmp_path, fake_openai)
    leaked = {r.fault for r in fake_openai.log}
    assert {"leak400", "leak500"} <= leaked
    rejects = sum(sum(read_manifest(o).reject_counts.values()) for o in outs)
    assert rejects > 0  # the 400s became rejects, with the server's message in their detail
    files = [p for o in outs for p in o.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" and p.name.startswith("rejects") for p in files)
    for path in files:
        assert KEY not in _texts_of(path), path
    printed = capsys.readouterr()
    assert KEY not in caplog.text + printed.out + printed.err
    assert "[redacted]" in "".join(_texts_of(p) for p in files if p.name.startswith("rejects"))
