"""Faults survived with every result correct; truncation handed back; rerun from cache; limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ops.backends import open_engine
from ops.engine import Engine, EngineConfig
from ops.engine.limits import AdaptiveLimiter
from ops.engine.stats import EngineStats
from ops.protocol import GenerationParams, LLMRequest, LLMResponse, Message
from tests.fakes._server import FakeRequest, FakeServer, FaultPlan
from tests.fakes.fake_openai import FakeOpenAI

N = 40


def _request(i: int) -> LLMRequest:
    return LLMRequest("caption2query", (Message("user", f"item {i}"),), GenerationParams(seed=i))


def _answer(request: FakeRequest) -> str:
    return f"result for <{request.messages[-1][1]}>"


def _config(server: FakeServer, tmp_path: Path, **overrides: object) -> EngineConfig:
    fields: dict[str, object] = {
        "backend": "openai" if isinstance(server, FakeOpenAI) else "gemini",
        "model": "gpt-4o-mini" if isinstance(server, FakeOpenAI) else "gemini-2.0-flash",
        "base_url": server.base_url if isinstance(server, FakeOpenAI) else server.url,
        "api_key_env": "CHATUMM_TEST_KEY",
        "cache_dir": tmp_path / "cache",
        "timeout_s": 1.0,
        "concurrency": 16,
    }
    return EngineConfig.model_validate({**fields, **overrides})


async def _run_all(config: EngineConfig, n: int = N) -> tuple[list[LLMResponse], Engine]:
    async with open_engine(config) as engine:
        return list(await asyncio.gather(*(engine.complete(_request(i)) for i in range(n)))), engine


@pytest.fixture
def server(llm_server: FakeServer) -> FakeServer:
    llm_server.answer = _answer
    return llm_server


def test_faults_are_survived_with_every_result_correct(server: FakeServer, tmp_path: Path) -> None:
    # Four 429s with Retry-After, three 500s, two hangs past the client timeout, then 10% of
    # the rest 429 and 5% 500.
    first = ("429", "500", "timeout", "429", "ok", "500", "429", "timeout", "500", "429")
    server.set_faults(
        FaultPlan(first=first, share={"429": 0.1, "500": 0.05}, retry_after_s=0.2, hang_s=3)
    )
    results, engine = asyncio.run(_run_all(_config(server, tmp_path)))
    assert [r.text for r in results] == [f"result for <item {i}>" for i in range(N)]
    assert all(r.finish_reason == "stop" for r in results)
    faults = [r.fault for r in server.log]
    total = engine.stats.total
    assert total.rate_limited == faults.count("429") >= 4
    assert total.attempts == len(server.log) == N + total.retries
    assert total.requests == N and total.errors == 0
    # Every 429'd request came back no sooner than its Retry-After.
    by_prompt: dict[str, list[float]] = {}
    for logged in server.log:
        by_prompt.setdefault(repr(logged.body)[:400], []).append(logged.t)
    for logged in server.log:
        if logged.fault == "429":
            times = by_prompt[repr(logged.body)[:400]]
            later = [t for t in times if t > logged.t]
            assert later and min(later) - logged.t >= 0.2 * 0.95


def test_truncated_completions_are_returned_and_never_cached(
    server: FakeServer, tmp_path: Path
) -> None:
    server.set_faults(FaultPlan(first=("length",) * 3))
    config = _config(server, tmp_path, concurrency=1)
    first, engine = asyncio.run(_run_all(config, n=5))
    assert [r.finish_reason for r in first] == ["length"] * 3 + ["stop"] * 2
    assert engine.stats.total.truncated == 3 and engine.stats.total.retries == 0
    server.reset_log()
    server.set_faults(FaultPlan())
    second, engine = asyncio.run(_run_all(config, n=5))
    # The three truncated ones are asked again; the two complete ones come from the cache.
    assert len(server.log) == 3 and engine.stats.total.cache_hits == 2
    assert [r.text for r in second] == [f"result for <item {i}>" for i in range(5)]


def test_second_identical_run_issues_zero_requests(server: FakeServer, tmp_path: Path) -> None:
    config = _config(server, tmp_path)
    first, _ = asyncio.run(_run_all(config))
    assert len(server.log) == N
    server.reset_log()
    second, engine = asyncio.run(_run_all(config))
    assert server.log == [] and second == first
    assert engine.stats.total.cache_hits == N and engine.stats.total.requests == 0


def test_retries_exhausted_is_an_error_response_not_an_exception(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.set_faults(FaultPlan(first=("500",) * 3))
    results, engine = asyncio.run(_run_all(_config(fake_openai, tmp_path, max_retries=2), n=1))
    assert results[0].finish_reason == "error" and "server had an error" in results[0].text
    assert engine.stats.total.errors == 1 and len(fake_openai.log) == 3


def test_rpm_limit_is_respected(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # 1,200 rpm = 20/s with a one-second burst: 40 requests need at least ~1 s.
    asyncio.run(_run_all(_config(fake_openai, tmp_path, rpm=1200, concurrency=64), n=40))
    times = sorted(r.t for r in fake_openai.log)
    # A token bucket never lets more than burst + rate * span requests out in a span; arrival
    # times at the server jitter by the connection set-up, so widen each span by `jitter`.
    rate, burst, jitter = 20.0, 20.0, 0.3
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start + jitter) + 1
    assert times[-1] - times[0] >= (40 - burst) / rate - jitter


def test_tpm_limit_spaces_requests(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # Each request reserves ~1 prompt token + 100 max_tokens and uses 101 (100 for the answer);
    # 12,000 tpm = 200/s with a 200-token bucket: two at once, then one per ~0.5 s.
    fake_openai.answer = lambda request: "y" * 400
    config = _config(fake_openai, tmp_path, tpm=12000)

    async def run() -> None:
        async with open_engine(config) as engine:
            reqs = [
                LLMRequest(
                    "op", (Message("user", f"q{i}"),), GenerationParams(max_tokens=100, seed=i)
                )
                for i in range(4)
            ]
            await asyncio.gather(*(engine.complete(r) for r in reqs))

    asyncio.run(run())
    times = sorted(r.t for r in fake_openai.log)
    assert times[-1] - times[0] >= 0.8


def test_cost_accounting(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.answer = lambda request: "x" * 40  # 10 completion tokens
    config = _config(fake_openai, tmp_path, model="my-model", prices={"my-model": (1.0, 4.0)})
    _, engine = asyncio.run(_run_all(config, n=10))
    usage = engine.stats.by_operation["caption2query"]
    assert engine.stats.by_model["my-model"] == usage
    # "item i" is 6 characters (2 tokens), 7 for i >= 10; the fake counts 4 characters a token.
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 100)
    assert usage.cost_usd == pytest.approx((20 * 1.0 + 100 * 4.0) / 1e6)
    assert engine.stats.unpriced == set()
    _, unpriced = asyncio.run(_run_all(_config(fake_openai, tmp_path / "b", model="mystery"), n=1))
    assert unpriced.stats.unpriced == {"mystery"} and unpriced.stats.total.cost_usd == 0


def test_usage_by_operation_and_by_model_sums_the_pairs() -> None:
    stats = EngineStats()
    for (operation, model), (requests, cost) in {
        ("caption2query", "m1"): (3, 0.5),
        ("caption2query", "m2"): (1, 0.25),
        ("drive_hs", "m1"): (2, 1.0),
    }.items():
        usage = stats.usage(operation, model)
        usage.requests, usage.cost_usd = requests, cost
    assert {op: u.requests for op, u in stats.by_operation.items()} == {
        "caption2query": 4,
        "drive_hs": 2,
    }
    assert {m: u.cost_usd for m, u in stats.by_model.items()} == {"m1": 1.5, "m2": 0.25}
    assert stats.total.requests == 6 and stats.as_dict()["total"]["cost_usd"] == 1.75


def test_sporadic_429s_keep_full_concurrency_but_a_storm_halves_it() -> None:
    async def run() -> None:
        limiter = AdaptiveLimiter(64)
        for i in range(400):  # 5% 429s: noise, not load
            limiter.on_rate_limited(0.0) if i % 20 == 0 else limiter.on_success()
        assert limiter.limit == 64 and limiter.decreases == 0
        for i in range(40):  # half the answers 429: the server is overloaded
            limiter.on_rate_limited(0.05) if i % 2 else limiter.on_success()
        assert limiter.decreases == 1 and 32 <= limiter.limit < 33
        # The pause holds new requests back for the Retry-After, then lets them through.
        await asyncio.wait_for(limiter.acquire(), timeout=1.0)
        assert limiter.in_flight == 1
        limiter.release()
        for _ in range(32 * 5):
            limiter.on_success()
        assert 36 < limiter.limit < 38  # additive increase: ~1 per round of `limit` successes

    asyncio.run(run())


def test_backoff_honours_retry_after_and_is_exponential_without_it() -> None:
    from ops.engine.engine import backoff_seconds
    from ops.engine.errors import RateLimitedError

    refused = RateLimitedError("slow down", retry_after=2.0)
    for failures in (1, 3, 8):  # the server's wait, whatever the count, with 0-10% jitter
        assert all(2.0 <= backoff_seconds(refused, failures) <= 2.2 for _ in range(200))
    silent = RateLimitedError("slow down", retry_after=None)
    waits = [backoff_seconds(silent, 4) for _ in range(2000)]
    assert all(0.0 <= w <= 4.0 for w in waits) and max(waits) > 3.0  # full jitter up to 0.5*2^3
    assert all(backoff_seconds(silent, 20) <= 30.0 for _ in range(200))  # capped


def test_keyed_faults_meet_every_client_on_the_same_requests() -> None:
    plan = FaultPlan(share={"429": 0.3}, keyed=True, seed=4)
    requests = [f"request {i}".encode() for i in range(200)]
    first, second = FakeOpenAI(faults=plan), FakeOpenAI(faults=plan)
    a = {r: [first.next_fault(r) for _ in range(3)] for r in requests}  # a request and 2 retries
    b = {r: [second.next_fault(r) for _ in range(3)] for r in reversed(requests)}
    assert a == b  # the same faults per request and per repeat, whatever the order
    refused = sum(f[0] == "429" for f in a.values())
    assert 40 <= refused <= 80  # ~30% of 200
    assert any(f[0] == "429" and f[1] == "ok" for f in a.values())  # a retry draws anew
