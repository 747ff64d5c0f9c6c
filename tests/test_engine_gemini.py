"""The gemini backend against the fake Gemini server, through its own HTTP path and through
google-genai: thinking under control, configuration errors that stop a run, malformed replies
retried, Vertex AI with application-default credentials, proxies, keys never repeated."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.engine import Engine, EngineConfig
from ops.engine.gemini_backend import GeminiBackend
from ops.protocol import GenerationParams, LLMRequest, Message
from synth.shards import read_manifest
from synth.stages.report import summary_table
from synth.stats import compute_stats
from synth.stats_view import usage_table
from tests.fakes._server import MALFORMED, FakeRequest, Fault, FaultPlan
from tests.fakes.fake_gemini import ACCESS_TOKEN, FakeGemini
from tests.stages_support import EXAMPLES, op_answer, run_stage

ROOT = Path(__file__).resolve().parents[1]
KEY = "AIzaSy-test-0123456789abcdef-gemini"
CLIENTS = ["http", "sdk"]


def _request(i: int, max_tokens: int = 64) -> LLMRequest:
    messages = (Message("system", "You write queries."), Message("user", f"caption {i}"))
    return LLMRequest("caption2query", messages, GenerationParams(max_tokens=max_tokens, seed=i))


def _reverse(request: FakeRequest) -> str:
    return request.messages[-1][1][::-1]


def _config(server: FakeGemini, tmp_path: Path, **overrides: object) -> EngineConfig:
    fields: dict[str, object] = {
        "backend": "gemini",
        "model": "gemini-2.5-pro",
        "base_url": server.url,
        "cache_dir": tmp_path / "cache",
        "timeout_s": 5.0,
    }
    return EngineConfig.model_validate({**fields, **overrides})


def _engine(config: EngineConfig, client: str) -> Engine:
    return Engine(GeminiBackend(config, client=client), config)


@pytest.fixture
def gemini(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    fake_gemini.api_key = KEY
    fake_gemini.answer = _reverse
    return fake_gemini


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("model", "budget", "sent"),
    [
        ("gemini-2.5-pro", None, 128),  # cannot stop thinking: the smallest budget
        ("gemini-2.5-pro", 2048, 2048),  # the user's budget, spent to the last token
        ("gemini-2.5-flash", None, 0),  # thinking off where the model allows it
        ("gemini-2.0-flash", None, None),  # a model that does not think: no configuration
    ],
)
def test_thinking_budget_is_sent_spent_counted_and_priced(
    gemini: FakeGemini,
    tmp_path: Path,
    client: str,
    model: str,
    budget: int | None,
    sent: int | None,
) -> None:
    config = _config(gemini, tmp_path, model=model, thinking_budget=budget)

    async def run() -> Engine:
        async with _engine(config, client) as engine:
            out = await asyncio.gather(*(engine.complete(_request(i)) for i in range(3)))
            assert [r.text for r in out] == [f"caption {i}"[::-1] for i in range(3)]
            assert all(r.finish_reason == "stop" and r.thinking_tokens == (sent or 0) for r in out)
            return engine

    engine = asyncio.run(run())
    generation = gemini.log[0].body["generationConfig"]
    assert isinstance(generation, dict)
    thinking = generation.get("thinkingConfig")
    if sent is None:
        assert thinking is None and generation["maxOutputTokens"] == 64
    else:
        assert isinstance(thinking, dict)
        assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == sent
        assert generation["maxOutputTokens"] == 64 + sent  # room to answer after thinking
    usage = engine.stats.total
    assert usage.thinking_tokens == 3 * (sent or 0)
    price_in, price_out = config.price_table[model]
    output = usage.completion_tokens + usage.thinking_tokens
    assert usage.cost_usd == pytest.approx(
        (usage.prompt_tokens * price_in + output * price_out) / 1e6
    )


def test_a_dynamic_budget_leaves_room_for_the_most_the_model_may_think(
    gemini: FakeGemini, tmp_path: Path
) -> None:
    config = _config(gemini, tmp_path, thinking_budget=-1)

    async def run() -> None:
        async with _engine(config, "http") as engine:
            response = await engine.complete(_request(0))
            assert response.finish_reason == "stop" and 300 <= response.thinking_tokens <= 1500

    asyncio.run(run())
    generation = gemini.log[0].body["generationConfig"]
    assert isinstance(generation, dict)
    assert generation["thinkingConfig"] == {"thinkingBudget": -1}
    assert generation["maxOutputTokens"] == 64 + 32768  # 2.5 Pro's largest budget


def test_a_budget_the_model_refuses_is_an_error_before_any_request(gemini: FakeGemini) -> None:
    with pytest.raises(ValueError, match=r"gemini-2.5-pro always thinks.*128-32768"):
        GeminiBackend(EngineConfig(backend="gemini", model="gemini-2.5-pro", thinking_budget=0))
    with pytest.raises(ValueError, match=r"outside gemini-2.5-flash's range 1-24576"):
        GeminiBackend(
            EngineConfig(backend="gemini", model="gemini-2.5-flash", thinking_budget=50_000)
        )


def test_the_tokens_per_minute_bucket_counts_thinking(gemini: FakeGemini, tmp_path: Path) -> None:
    config = _config(gemini, tmp_path, thinking_budget=4096, tpm=6000)  # 100 tokens a second

    async def run() -> float:
        async with _engine(config, "http") as engine:
            response = await engine.complete(_request(0, max_tokens=16))
            assert response.thinking_tokens == 4096
            assert engine._tpm is not None
            return engine._tpm.level

    # Prompt, answer and 4,096 thinking tokens were taken from a bucket of 100: deep in debt
    # (the next requests wait ~40 s); without the thinking it would be near zero.
    assert asyncio.run(run()) < 100 - 4096 + 50


def test_a_stage_summary_and_synth_stats_show_thinking_tokens(
    gemini: FakeGemini, tmp_path: Path
) -> None:
    gemini.answer = op_answer
    out = tmp_path / "a"
    llm = {"llm": "gemini", "model": "gemini-2.5-pro", "base_url": gemini.url}
    run_stage("a", sources=EXAMPLES, out=out, limit=4, thinking_budget=256, **llm)
    summary = read_manifest(out).summary
    requests = summary["llm"]["requests"]
    assert requests >= 4 and summary["llm"]["thinking_tokens"] == 256 * requests
    stats = compute_stats([out])
    assert stats.engine["thinking_tokens"] == 256 * requests
    shown = [
        str(c) for column in usage_table(stats).columns for c in [column.header, *column._cells]
    ]
    assert "thinking" in shown and f"{256 * requests:,}" in shown
    rows = [str(cell) for column in summary_table(summary).columns for cell in column._cells]
    assert "thinking tokens (billed as out)" in rows and f"{256 * requests:,}" in rows


def _synth_run(out: Path, server: FakeGemini, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = [sys.executable, "-m", "synth", "run", "stage-a", "--sources", str(EXAMPLES),
            "--limit", "6", "--out", str(out), "--llm", "gemini", "--base-url", server.url,
            "--no-progress", *args]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=120
    )


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("bad key", ["GEMINI_API_KEY", "API_KEY_INVALID"]),
        ("no key", ["GEMINI_API_KEY"]),
        ("unknown model", ["gemini-9.9-pro", "404"]),
        ("forbidden model", ["gemini-2.5-pro", "GEMINI_API_KEY", "403"]),
    ],
)
def test_a_configuration_error_stops_the_run_with_one_line_and_exit_2(
    gemini: FakeGemini, tmp_path: Path, case: str, names: list[str]
) -> None:
    env = {"GEMINI_API_KEY": KEY}
    args = ["--model", "gemini-2.5-pro"]
    if case == "bad key":
        env = {"GEMINI_API_KEY": "AIzaSy-wrong-key-0000000000000"}
    elif case == "no key":
        env = {}
    elif case == "unknown model":
        gemini.known_models = frozenset({"gemini-2.5-pro"})
        args = ["--model", "gemini-9.9-pro"]
    else:
        gemini.forbidden_models = frozenset({"gemini-2.5-pro"})
    out = tmp_path / "a"
    done = _synth_run(out, gemini, env, *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(name in lines[0] for name in names), lines[0]
    assert "AIzaSy" not in done.stderr + done.stdout
    manifests = list(out.glob("manifest-*.json")) if out.exists() else []
    assert not any(json.loads(m.read_text())["complete"] for m in manifests)
    assert not list(out.glob("train-*.parquet")) if out.exists() else True


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("fault", MALFORMED)
def test_a_malformed_200_is_retried(
    gemini: FakeGemini, tmp_path: Path, client: str, fault: Fault
) -> None:
    gemini.set_faults(FaultPlan(first=(fault, fault)))

    async def run() -> Engine:
        async with _engine(_config(gemini, tmp_path), client) as engine:
            response = await engine.complete(_request(0))
            assert (response.finish_reason, response.text) == ("stop", "0 noitpac")
            return engine

    engine = asyncio.run(run())
    assert engine.stats.total.retries == 2 and engine.stats.total.errors == 0


def test_a_quoted_key_is_redacted(
    gemini: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gemini.set_faults(FaultPlan(first=("leak400",)))
    caplog.set_level(logging.DEBUG)

    async def run() -> str:
        async with _engine(_config(gemini, tmp_path), "http") as engine:
            return (await engine.complete(_request(0))).text

    text = asyncio.run(run())
    assert "[redacted]" in text and KEY not in text and KEY not in caplog.text


def _service_account(path: Path, token_uri: str) -> None:
    """A service-account key file, its key made here, its token endpoint the fake's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "chatumm-proj",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "synth@chatumm-proj.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))


def test_vertex_ai_with_application_default_credentials(
    gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adc = tmp_path / "service-account.json"
    _service_account(adc, f"{gemini.url}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.delenv("GEMINI_API_KEY")
    gemini.answer = op_answer
    out = tmp_path / "a"
    options = {"llm": "gemini", "model": "gemini-2.5-flash", "base_url": gemini.url,
               "vertex": True, "project": "chatumm-proj", "location": "us-central1"}  # fmt: skip
    run_stage("a", sources=EXAMPLES, out=out, limit=3, **options)
    assert read_manifest(out).samples == 3
    token, *calls = gemini.log
    assert token.path == "/token"
    assert token.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    route = "/projects/chatumm-proj/locations/us-central1/publishers/google/models/"
    assert calls and all(route + "gemini-2.5-flash:generateContent" in c.path for c in calls)
    assert all(c.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}" for c in calls)


def test_vertex_needs_a_project_and_a_location() -> None:
    with pytest.raises(ValueError, match="--vertex needs --project and --location"):
        GeminiBackend(EngineConfig(backend="gemini", vertex=True, project="p"))
    with pytest.raises(ValueError, match="vertex is an option of the gemini backend"):
        EngineConfig(backend="openai", vertex=True)


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_variables_apply_except_to_loopback(
    gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    _no_proxy_env(monkeypatch)

    async def ask(base_url: str) -> str:
        config = _config(gemini, tmp_path, base_url=base_url, model="gemini-2.0-flash")
        config = config.model_copy(update={"cache_dir": None})  # every ask goes to a server
        async with _engine(config, client) as engine:
            return (await engine.complete(_request(1))).text

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    for loopback in (f"127.0.0.1:{gemini.port}", f"localhost:{gemini.port}"):
        assert asyncio.run(ask(f"http://{loopback}")) == "1 noitpac"
    monkeypatch.setenv("HTTP_PROXY", gemini.url)  # the fake as a forward proxy
    sent = len(gemini.log)
    assert asyncio.run(ask("http://gemini.example:8000")) == "1 noitpac"
    assert len(gemini.log) == sent + 1 and gemini.log[-1].headers["Host"] == "gemini.example:8000"
