"""The openai (aiohttp and SDK clients) and gemini backends over real HTTP to the fakes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ops.backends import open_engine
from ops.engine import BackendConfigError, Engine, EngineConfig, TransientError
from ops.engine.openai_backend import OpenAIBackend
from ops.protocol import GenerationParams, LLMRequest, Message
from tests.fakes._server import FakeRequest
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_openai import FakeOpenAI

KEY = "sk-test-7f3a9c1e5b2d4680-never-log-me"


def _request(i: int, attempt: int = 0) -> LLMRequest:
    return LLMRequest(
        operation="caption2query",
        messages=(Message("system", "You write queries."), Message("user", f"caption {i}")),
        params=GenerationParams(temperature=0.7, top_p=0.9, max_tokens=64, seed=i, attempt=attempt),
    )


def _reverse(request: FakeRequest) -> str:
    return request.messages[-1][1][::-1]


def _openai_engine(server: FakeOpenAI, tmp_path: Path, client: str = "http") -> Engine:
    config = EngineConfig(
        backend="openai",
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key_env="CHATUMM_TEST_KEY",
        cache_dir=tmp_path / "cache",
        timeout_s=5,
    )
    return Engine(OpenAIBackend(config, client=client), config)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", ["http", "sdk"])
def test_openai_wire_format_and_answers(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake_openai.api_key = KEY
    fake_openai.answer = _reverse

    async def run() -> list[str]:
        async with _openai_engine(fake_openai, tmp_path, client) as engine:
            out = await asyncio.gather(*(engine.complete(_request(i)) for i in range(5)))
            assert all(r.finish_reason == "stop" and r.model == "gpt-4o-mini" for r in out)
            return [r.text for r in out]

    assert asyncio.run(run()) == [f"caption {i}"[::-1] for i in range(5)]
    body = next(r.body for r in fake_openai.log if r.body["seed"] == 3)
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "You write queries."},
        {"role": "user", "content": "caption 3"},
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 64)


def test_gemini_wire_format_and_answers(
    fake_gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    fake_gemini.api_key = KEY
    fake_gemini.answer = _reverse
    config = EngineConfig(
        backend="gemini", model="gemini-2.0-flash", base_url=fake_gemini.url, cache_dir=tmp_path
    )

    async def run() -> list[str]:
        async with open_engine(config) as engine:
            out = await asyncio.gather(*(engine.complete(_request(i)) for i in range(5)))
            assert all(r.finish_reason == "stop" and r.prompt_tokens > 0 for r in out)
            return [r.text for r in out]

    assert asyncio.run(run()) == [f"caption {i}"[::-1] for i in range(5)]
    request = fake_gemini.log[0]
    assert request.path == "/v1/models/gemini-2.0-flash:generateContent"
    assert request.body["systemInstruction"]["parts"] == [{"text": "You write queries."}]
    assert request.body["generationConfig"]["maxOutputTokens"] == 64


def test_a_new_attempt_is_a_new_sample(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    async def run() -> None:
        async with _openai_engine(fake_openai, tmp_path) as engine:
            await engine.complete(_request(1, attempt=0))
            await engine.complete(_request(1, attempt=1))

    asyncio.run(run())
    seeds = [r.body["seed"] for r in fake_openai.log]
    assert len(seeds) == 2 and seeds[0] != seeds[1]  # a cache miss and a different seed


def test_bad_key_fails_fast_with_the_fix(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", "sk-wrong")
    fake_openai.api_key = KEY

    async def run() -> None:
        async with _openai_engine(fake_openai, tmp_path) as engine:
            await engine.complete(_request(0))

    with pytest.raises(
        BackendConfigError, match=r"refused the API key in CHATUMM_TEST_KEY \(HTTP 401"
    ):
        asyncio.run(run())


def test_missing_key_for_the_real_api_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="set OPENAI_API_KEY"):
        OpenAIBackend(EngineConfig(backend="openai"))


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_api_key_is_never_logged_or_cached(
    fake_openai: FakeOpenAI,
    fake_gemini: FakeGemini,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    backend: str,
) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    server = fake_openai if backend == "openai" else fake_gemini
    server.api_key = KEY
    base_url = fake_openai.base_url if backend == "openai" else fake_gemini.url
    config = EngineConfig(
        backend=backend,  # type: ignore[arg-type]
        base_url=base_url,
        api_key_env="CHATUMM_TEST_KEY",
        cache_dir=tmp_path / "cache",
        max_retries=1,
    )
    server.faults = server.faults.__class__(first=("429",), retry_after_s=0.01)
    caplog.set_level(logging.DEBUG)

    async def run() -> None:
        async with open_engine(config) as engine:
            for i in range(3):
                assert (await engine.complete(_request(i))).finish_reason == "stop"
            assert KEY not in repr(engine.stats.as_dict()) and KEY not in repr(config)

    asyncio.run(run())
    assert len(server.log) == 4  # the key did reach the server (auth passed) ...
    assert caplog.records and KEY not in caplog.text  # ... but no log line
    files = list((tmp_path / "cache").iterdir())
    assert files
    for path in files:  # nor the cache (database, WAL, shared memory)
        assert KEY.encode() not in path.read_bytes()


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_openai_proxy_variables_apply_except_to_loopback(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY carries a request to a remote host (the fake acts as the forward proxy); a
    loopback URL goes straight to its server even when the proxy is dead; NO_PROXY exempts."""
    _no_proxy_env(monkeypatch)
    fake_openai.answer = _reverse

    async def ask(base_url: str) -> str:
        config = EngineConfig(backend="openai", model="m", base_url=base_url, timeout_s=5)
        backend = OpenAIBackend(config)
        try:
            return (await backend.complete(_request(1))).text
        finally:
            await backend.aclose()

    monkeypatch.setenv("HTTP_PROXY", fake_openai.url)
    assert asyncio.run(ask("http://api.example:8000/v1")) == "1 noitpac"
    assert fake_openai.log[-1].headers["Host"] == "api.example:8000"  # sent through the proxy

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    port = fake_openai.port
    for loopback in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert asyncio.run(ask(f"http://{loopback}/v1")) == "1 noitpac"
    monkeypatch.setenv("NO_PROXY", "exempt.example")
    with pytest.raises(TransientError):  # exempt: sent directly, to a host that does not exist
        asyncio.run(ask("http://exempt.example:1/v1"))
