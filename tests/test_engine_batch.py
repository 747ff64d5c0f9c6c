"""Batch mode at the engine: requests gathered into batches through the real SDKs (openai,
google-genai) against the fake servers' batch APIs; answers as online at half the cost; a
batch of an earlier (killed) run followed, never submitted again; an expired batch's unfinished
requests, and only those, sent again; per-request and whole-batch errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ops.backends import make_batch_backend, open_engine
from ops.engine import BackendConfigError, Engine, EngineConfig
from ops.engine.batch_store import BatchStore
from ops.engine.cache import request_key
from ops.protocol import GenerationParams, LLMRequest, LLMResponse, Message
from synth.stages.config import RunConfig, load_run_config
from tests.fakes._server import FakeServer, FaultPlan, echo_answer
from tests.fakes.batches import BatchPlan
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_openai import FakeOpenAI

KEY = "sk-test-batch-5c1d9e2f7a3b"
BACKENDS = ["openai", "gemini"]


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake: FakeServer = (
        FakeOpenAI(echo_answer) if request.param == "openai" else FakeGemini(echo_answer)
    )
    with fake:
        yield fake


def _backend(server: FakeServer) -> str:
    return "openai" if isinstance(server, FakeOpenAI) else "gemini"


def _config(server: FakeServer, cache: Path, **overrides: Any) -> EngineConfig:
    fields: dict[str, Any] = {
        "backend": _backend(server),
        "base_url": server.base_url if isinstance(server, FakeOpenAI) else server.url,
        "api_key_env": "CHATUMM_TEST_KEY",
        "cache_dir": cache,
        "batch": True,
        "batch_window_s": 0.02,
        "batch_poll_s": 0.01,
        "batch_poll_max_s": 0.05,
        "timeout_s": 10.0,
    }
    return EngineConfig.model_validate({**fields, **overrides})


def _request(i: int, text: str = "item") -> LLMRequest:
    return LLMRequest("op", (Message("user", f"{text} {i}"),), GenerationParams(seed=i))


def _ask(config: EngineConfig, requests: list[LLMRequest]) -> tuple[list[LLMResponse], Engine]:
    async def run() -> tuple[list[LLMResponse], Engine]:
        async with open_engine(config) as engine:
            return list(await asyncio.gather(*(engine.complete(r) for r in requests))), engine

    return asyncio.run(run())


def _sizes(server: FakeServer) -> list[int]:
    return [len(b.lines) for b in sorted(server.book.batches.values(), key=lambda b: b.index)]  # type: ignore[attr-defined]


def _custom_ids(config: EngineConfig, requests: list[LLMRequest]) -> list[str]:
    return [request_key(config.backend, config.model, r).hex() for r in requests]


def test_answers_come_back_as_online_at_half_the_price(server: FakeServer, tmp_path: Path) -> None:
    requests = [_request(i) for i in range(6)]
    batch = _config(server, tmp_path / "batch")
    online = batch.model_copy(update={"batch": False, "cache_dir": tmp_path / "online"})
    answers, engine = _ask(batch, requests)
    online_answers, online_engine = _ask(online, requests)
    assert answers == online_answers
    assert [a.text for a in answers] == [f"answer to: item {i}" for i in range(6)]
    assert _sizes(server) == [6]  # one batch, gathered within the window
    total, online_total = engine.stats.total, online_engine.stats.total
    assert total.requests == 6 and total.prompt_tokens == online_total.prompt_tokens
    assert total.cost_usd == pytest.approx(online_total.cost_usd / 2)
    assert engine.stats.batch is not None
    assert engine.stats.batch.as_dict() == {
        "submitted": 1, "resumed": 0, "done": 1, "ended_early": 0,
        "in_progress": 0, "collecting": 0, "waiting": 0,
    }  # fmt: skip
    assert engine.stats.as_dict()["batches"]["done"] == 1


def test_requests_are_gathered_by_count_bytes_and_time(fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    _ask(
        _config(fake_openai, tmp_path / "count", batch_max_requests=3),
        [_request(i) for i in range(7)],
    )
    assert sorted(_sizes(fake_openai)) == [1, 3, 3]

    fake_openai.book.batches.clear()
    config = _config(fake_openai, tmp_path / "bytes")
    line = len(make_batch_backend(config).api.line("0" * 64, _request(0))) + 1
    _ask(
        config.model_copy(update={"batch_max_bytes": 2 * line + line // 2}),
        [_request(i) for i in range(5)],
    )
    assert sorted(_sizes(fake_openai)) == [1, 2, 2]

    fake_openai.book.batches.clear()

    async def two_waves() -> None:
        async with open_engine(
            _config(fake_openai, tmp_path / "time", batch_window_s=0.05)
        ) as engine:
            first = [asyncio.ensure_future(engine.complete(_request(i))) for i in range(3)]
            await asyncio.sleep(0.3)  # past the window: the first batch is out
            await asyncio.gather(*first, *(engine.complete(_request(i)) for i in range(3, 5)))

    asyncio.run(two_waves())
    assert _sizes(fake_openai) == [3, 2]


async def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_batch_of_a_stopped_run_is_followed_not_submitted_again(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    book = server.book  # type: ignore[attr-defined]
    book.plan = BatchPlan(hold_from=0)
    config = _config(server, tmp_path)
    requests = [_request(i) for i in range(4)]

    async def stopped_run() -> None:
        engine = open_engine(config)
        asks = [asyncio.ensure_future(engine.complete(r)) for r in requests]
        assert engine.stats.batch is not None
        await _wait_for(lambda: engine.stats.batch.submitted == 1)  # type: ignore[union-attr]
        for ask in asks:  # the run stops: its operations are cancelled, the batch stays out
            ask.cancel()
        await engine.aclose()

    asyncio.run(stopped_run())
    assert _sizes(server) == [4]
    book.release()
    answers, engine = _ask(config, requests)
    assert [a.text for a in answers] == [f"answer to: item {i}" for i in range(4)]
    assert _sizes(server) == [4] and set(book.submitted.values()) == {1}
    assert engine.stats.batch is not None
    assert (engine.stats.batch.submitted, engine.stats.batch.resumed) == (0, 1)


@pytest.mark.parametrize("reached", [True, False], ids=["created", "never-created"])
def test_a_submission_cut_off_before_its_id_was_recorded(server: FakeServer, tmp_path: Path, reached: bool) -> None:  # fmt: skip
    """A run killed between recording a batch and recording the provider's id for it: the rerun
    looks the label up; a batch found is followed, none found means its requests go out now."""
    config = _config(server, tmp_path)
    requests = [_request(i) for i in range(3)]
    keys = [request_key(config.backend, config.model, r) for r in requests]
    label = "chatumm-cut-off-0001"
    store = BatchStore(tmp_path)
    store.begin(label, config.backend, config.model, keys)
    store.close()
    if reached:

        async def create() -> None:
            api = make_batch_backend(config).api
            lines = [api.line(k.hex(), r) for k, r in zip(keys, requests, strict=True)]
            await api.submit(label, b"\n".join(lines) + b"\n")
            await api.aclose()

        asyncio.run(create())
    answers, engine = _ask(config, requests)
    assert [a.text for a in answers] == [f"answer to: item {i}" for i in range(3)]
    book = server.book  # type: ignore[attr-defined]
    assert _sizes(server) == [3] and set(book.submitted.values()) == {1}
    assert engine.stats.batch is not None
    assert (engine.stats.batch.resumed, engine.stats.batch.submitted) == (
        (1, 0) if reached else (0, 1)
    )
    labels = {b.label for b in book.batches.values()}
    assert (label in labels) is reached


def test_an_expired_batch_goes_out_again_for_its_unfinished_requests_only(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    # OpenAI returns what ran before the window closed; Gemini returns nothing of an expired batch.
    ran = 2 if isinstance(server, FakeOpenAI) else 0
    book = server.book  # type: ignore[attr-defined]
    book.plan = BatchPlan(expire={0: ran})
    config = _config(server, tmp_path)
    requests = [_request(i) for i in range(5)]
    answers, engine = _ask(config, requests)
    assert [a.text for a in answers] == [f"answer to: item {i}" for i in range(5)]
    ids = _custom_ids(config, requests)
    first, *later = sorted(book.batches.values(), key=lambda b: b.index)
    assert [line_id(line) for line in first.lines] == ids
    # The unfinished ones went out again (a retry each, so possibly in several batches), once.
    assert sorted(line_id(line) for b in later for line in b.lines) == sorted(ids[ran:])
    assert engine.stats.batch is not None
    assert (engine.stats.batch.ended_early, engine.stats.batch.done) == (1, len(later))
    assert engine.stats.total.retries == 5 - ran and engine.stats.total.requests == 5


def line_id(line: dict[str, Any]) -> str:
    return str(line.get("custom_id") or line.get("key"))


def test_a_request_refused_in_a_batch_is_an_error_and_a_5xx_goes_out_again(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    server.set_faults(FaultPlan(first=("400", "500")))
    config = _config(server, tmp_path)
    requests = [_request(i) for i in range(3)]
    answers, engine = _ask(config, requests)
    assert answers[0].finish_reason == "error" and "RequestError" in answers[0].text
    assert "context length" in answers[0].text or "token count exceeds" in answers[0].text
    assert [a.text for a in answers[1:]] == ["answer to: item 1", "answer to: item 2"]
    first, second = sorted(server.book.batches.values(), key=lambda b: b.index)  # type: ignore[attr-defined]
    assert [line_id(line) for line in first.lines] == _custom_ids(config, requests)
    assert [line_id(line) for line in second.lines] == _custom_ids(config, requests[1:2])
    usage = engine.stats.total
    assert (usage.errors, usage.retries, usage.requests) == (1, 1, 2)


def test_a_refused_batch_gives_its_requests_the_providers_reason(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    server.book.plan = BatchPlan(fail=frozenset({0}))  # type: ignore[attr-defined]
    answers, engine = _ask(_config(server, tmp_path), [_request(i) for i in range(3)])
    assert {a.finish_reason for a in answers} == {"error"}
    assert all("refused batch" in a.text for a in answers)
    if isinstance(server, FakeOpenAI):  # google-genai does not pass a failed batch's error on
        assert all("The batch input file is not valid." in a.text for a in answers)
    assert _sizes(server) == [3]  # a refused batch is not sent again
    assert engine.stats.batch is not None and engine.stats.batch.ended_early == 1


def test_an_answer_back_from_a_batch_is_never_asked_for_again(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    """A truncated answer is not in the response cache (online asks again); in batch mode the
    batch store keeps it, so a rerun gets it without submitting the request twice."""
    server.set_faults(FaultPlan(first=("length",)))
    config = _config(server, tmp_path)
    first, _ = _ask(config, [_request(0)])
    again, engine = _ask(config, [_request(0)])
    assert first == again and first[0].finish_reason == "length"
    assert _sizes(server) == [1]
    assert engine.stats.batch is not None and engine.stats.batch.submitted == 0


def test_a_server_without_the_batch_api_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    with FakeOpenAI(batch_api=False) as server, pytest.raises(BackendConfigError) as caught:
        _ask(_config(server, tmp_path), [_request(0)])
    message = str(caught.value)
    assert "does not serve a batch API" in message and "HTTP 404" in message
    assert server.base_url in message and "\n" not in message


def test_batch_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    with pytest.raises(ValidationError, match="--batch sends requests through a provider"):
        EngineConfig(backend="template", batch=True)
    with pytest.raises(ValidationError, match="drop --vertex or --batch"):
        EngineConfig(backend="gemini", vertex=True, project="p", location="l", batch=True)
    with pytest.raises(ValidationError, match="use --llm openai"):
        RunConfig(llm="local", batch=True)
    too_many = EngineConfig(
        backend="openai", batch=True, batch_max_requests=60_000, api_key_env="CHATUMM_TEST_KEY",
        cache_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(ValueError, match="at most 50,000 requests"):
        make_batch_backend(too_many)
    assert RunConfig(llm="openai", batch=True).concurrency == 2048  # requests waiting at once
    assert RunConfig(llm="openai", batch=True, concurrency=10).concurrency == 10
    assert RunConfig(llm="openai").concurrency == 64
    # Batch prices: half the list price, for the defaults and for overrides alike.
    prices = EngineConfig(backend="openai", batch=True, prices={"mine": (1.0, 3.0)}).price_table
    assert prices["gpt-4o-mini"] == (0.075, 0.30) and prices["mine"] == (0.5, 1.5)
    assert EngineConfig(backend="openai").price_table["gpt-4o-mini"] == (0.15, 0.60)
    # A run may switch between online and batch mode on resume.
    assert RunConfig(llm="openai", batch=True).identity() == RunConfig(llm="openai").identity()
    # The same settings in --config, the command line winning.
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "llm: gemini\nbatch: true\nbatch-window-s: 120\nbatch_max_requests: 1000\n"
    )
    cfg = load_run_config("a", yaml_file, {"batch_poll_s": 60.0, "batch_window_s": None})
    assert (cfg.batch, cfg.batch_window_s, cfg.batch_poll_s, cfg.batch_max_requests) == (
        True, 120.0, 60.0, 1000,
    )  # fmt: skip
    with pytest.raises(ValueError, match="batch_window_s: Input should be greater than 0"):
        load_run_config("a", yaml_file, {"batch_window_s": 0})


def test_a_key_an_answer_or_an_error_quotes_reaches_no_file(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    server.answer = lambda request: f"{echo_answer(request)} (called with {KEY})"
    server.set_faults(FaultPlan(first=("leak400",)))
    answers, _ = _ask(_config(server, tmp_path), [_request(i) for i in range(3)])
    assert answers[0].finish_reason == "error" and "[redacted]" in answers[0].text
    assert all("[redacted]" in a.text and KEY not in a.text for a in answers)
    for path in tmp_path.iterdir():  # the response cache, the batch store, their WALs
        assert KEY.encode() not in path.read_bytes(), path
