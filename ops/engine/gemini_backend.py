"""Google's Gemini: the Gemini API with an API key, or Vertex AI with application-default
credentials.

Two clients behind one class:
- ``http`` (the default for the Gemini API): one ``POST {base}/v1beta/models/{model}:
  generateContent`` per request through ``ops.engine.transport``, the key in
  ``x-goog-api-key``, the body built and read as plain JSON. Through google-genai the same
  request costs several times the CPU and caps a process's throughput well below the openai
  path's (bench/results/bench_ops.md), and a run's cost is set by the model, not the client.
- ``sdk``: ``google-genai`` (``client.aio.models.generate_content``) with its retries off (the
  engine retries). Always used for Vertex AI (``vertex=True``: ``project``/``location``,
  application-default credentials), where it brings auth and routing; it is also the
  wire-format reference the tests check the ``http`` client against. Its HTTP session is ours:
  environment proxies apply to the URL as in ``ops.engine.transport`` (a loopback URL none).

Thinking (2.5 models think before they answer, and bill the thinking as output): the request
carries a thinking budget per model family (``thinking_budget``: off where the family allows it,
a small budget where it cannot be turned off, or the user's ``thinking_budget``), and
``maxOutputTokens`` is the answer's budget plus the thinking budget, so that a model that spends
its whole budget still has room to answer. Thinking tokens come back in
``LLMResponse.thinking_tokens``; the engine prices them as output and counts them against TPM.

Contract: every failure is one of the engine's errors. A refused key (400 API_KEY_INVALID,
401), a forbidden or unknown model (403, 404) is a ``BackendConfigError`` naming the key's
variable or the model. A 200 whose body is not an answer (not UTF-8 JSON, neither candidates
nor a prompt verdict) is a ``TransientError``. A blocked prompt, a candidate stopped for safety,
recitation or any reason but STOP/MAX_TOKENS is ``content_filter``; MAX_TOKENS is ``length``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from ops.engine.config import EngineConfig
from ops.engine.errors import (
    BackendConfigError,
    TransientError,
    classify_status,
    parse_retry_after,
)
from ops.engine.transport import JSONPost, env_proxy, json_bytes
from ops.protocol import FinishReason, LLMRequest, LLMResponse

GEMINI_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1"  # as google-genai sends it
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "MAX_TOKENS": "length",
}


@dataclass(frozen=True)
class Thinking:
    """A model family's thinking budget: the range Google accepts, whether 0 turns thinking
    off, and the budget sent when the user sets none."""

    low: int
    high: int
    can_disable: bool
    default: int


# Longest prefix first. 2.5 Pro cannot stop thinking: its smallest budget keeps the cost of an
# operation (a short rewrite) near the answer's own; Flash and Flash-Lite answer without it.
THINKING: tuple[tuple[str, Thinking], ...] = (
    ("gemini-2.5-flash-lite", Thinking(512, 24576, can_disable=True, default=0)),
    ("gemini-2.5-flash", Thinking(1, 24576, can_disable=True, default=0)),
    ("gemini-2.5-pro", Thinking(128, 32768, can_disable=False, default=128)),
)


def thinking_budget(model: str, requested: int | None) -> int | None:
    """The thinking budget a request for ``model`` carries: the family's default, or
    ``requested`` checked against the family's range; None sends no thinking configuration
    (a model that does not think, and the user asked for nothing). -1 is Google's "dynamic"."""
    family = next((t for prefix, t in THINKING if model.startswith(prefix)), None)
    if family is None or requested in (None, -1):
        return requested if family is None or requested == -1 else family.default
    assert requested is not None
    if requested == 0 and not family.can_disable:
        raise ValueError(
            f"{model} always thinks: --thinking-budget must be {family.low}-{family.high} "
            "(or -1 for dynamic), not 0"
        )
    if requested and not family.low <= requested <= family.high:
        raise ValueError(
            f"--thinking-budget {requested} is outside {model}'s range {family.low}-{family.high}"
        )
    return requested


def thinking_room(model: str, budget: int | None) -> int:
    """Output tokens to leave for thinking on top of the answer's: the budget, or for a dynamic
    budget (-1) the most the family may think (unused tokens are not billed)."""
    if budget != -1:
        return budget or 0
    family = next((t for prefix, t in THINKING if model.startswith(prefix)), None)
    return family.high if family is not None else 8192


def request_body(request: LLMRequest, budget: int | None, model: str = "") -> dict[str, Any]:
    """A generateContent body: the system messages as the system instruction, the rest as
    contents; ``maxOutputTokens`` leaves room for the answer after the thinking."""
    p = request.params
    config: dict[str, Any] = {
        "temperature": p.temperature,
        "topP": p.top_p,
        "maxOutputTokens": p.max_tokens + thinking_room(model, budget),
        "seed": p.seed + 1_000_003 * p.attempt,  # a new attempt is a new sample
    }
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget}
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in request.messages
            if m.role != "system"
        ],
        "generationConfig": config,
    }
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    return body


def parse_answer(data: Any, model: str) -> LLMResponse:
    """The ``LLMResponse`` of a generateContent answer, as JSON (dicts and lists)."""
    candidates = data.get("candidates") if isinstance(data, dict) else None
    usage = (data.get("usageMetadata") if isinstance(data, dict) else None) or {}
    counts = {
        "prompt_tokens": int(usage.get("promptTokenCount") or 0),
        "completion_tokens": int(usage.get("candidatesTokenCount") or 0),
        "thinking_tokens": int(usage.get("thoughtsTokenCount") or 0),
    }
    if not candidates:
        if isinstance(data, dict) and data.get("promptFeedback"):  # the prompt was blocked
            return LLMResponse("", "content_filter", model, **counts)
        raise TypeError("neither candidates nor promptFeedback")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text") or "" for part in parts if not part.get("thought"))
    reason = candidate.get("finishReason") or "STOP"
    return LLMResponse(
        text, _FINISH.get(reason, "content_filter"), data.get("modelVersion") or model, **counts
    )


def google_error(status: int, error: Any, headers: Any, *, key_env: str, model: str) -> Exception:
    """The engine error for Google's error body (``{"error": {...}}`` or its inner dict)."""
    error = error.get("error", error) if isinstance(error, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    if status in (400, 401) and any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return BackendConfigError(
            f"Google refused the API key in {key_env} (API_KEY_INVALID); set a valid Gemini "
            "API key there"
        )
    retry_after = parse_retry_after(headers)
    for detail in details:  # google.rpc.RetryInfo: "retryDelay": "1.5s"
        delay = detail.get("retryDelay")
        if retry_after is None and isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                retry_after = float(delay[:-1])
    return classify_status(status, message, retry_after, key_env=key_env, model=model)


class GeminiBackend:
    name = "gemini"
    max_concurrency: int | None = None

    def __init__(self, config: EngineConfig, *, client: str = "http"):
        self.model = config.model
        self.budget = thinking_budget(config.model, config.thinking_budget)
        self.client = "sdk" if config.vertex else client
        self._key_env = config.key_source()
        self._config = config
        self._post: JSONPost | None = None
        self._sdk: Any = None
        self._session: Any = None
        if config.vertex:
            if not (config.project and config.location):
                raise ValueError(
                    "--vertex needs --project and --location (a Google Cloud project id and a "
                    "region such as us-central1)"
                )
            self._api_key = None
        else:
            self._api_key = config.api_key(required=True)
        if self.client == "http":
            base = (config.base_url or GEMINI_URL).rstrip("/")
            url = f"{base}/{API_VERSION}/models/{self.model}:generateContent"
            assert self._api_key is not None
            self._post = JSONPost(url, {"x-goog-api-key": self._api_key}, config.timeout_s)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._post is None:
            return await self._complete_sdk(request)
        answer = await self._post.post(json_bytes(request_body(request, self.budget, self.model)))
        if answer.status != 200:
            try:
                error = orjson.loads(answer.body)
            except orjson.JSONDecodeError:
                error = {"message": answer.body[:500].decode(errors="replace")}
            raise google_error(
                answer.status, error, answer.headers, key_env=self._key_env, model=self.model
            )
        try:
            return parse_answer(orjson.loads(answer.body), self.model)
        except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError, ValueError) as exc:
            head = answer.body[:200].decode(errors="replace")
            raise TransientError(f"malformed 200 reply ({type(exc).__name__}): {head!r}") from None

    async def _complete_sdk(self, request: LLMRequest) -> LLMResponse:
        import aiohttp
        from google.auth import exceptions as auth_errors
        from google.genai import errors

        try:
            client = self._sdk_client()
            out = await client.aio.models.generate_content(
                model=self.model, contents=request_body(request, self.budget, self.model)["contents"],
                config=self._sdk_config(request),
            )  # fmt: skip
        except errors.APIError as exc:
            headers = getattr(exc.response, "headers", None)
            raise google_error(
                exc.code, exc.details, headers, key_env=self._key_env, model=self.model
            ) from exc
        except (auth_errors.RefreshError, auth_errors.DefaultCredentialsError) as exc:
            raise BackendConfigError(
                f"Vertex AI credentials failed ({type(exc).__name__}: {exc}); run `gcloud auth "
                "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
            ) from exc
        except (
            asyncio.TimeoutError,
            aiohttp.ClientError,
            OSError,
            auth_errors.TransportError,
        ) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a 200 body that is not JSON (or not UTF-8)
            raise TransientError(f"malformed 200 reply ({type(exc).__name__})") from None
        try:
            return parse_answer(out.model_dump(mode="json", by_alias=True), self.model)
        except (LookupError, TypeError, AttributeError) as exc:
            raise TransientError(f"malformed 200 reply ({type(exc).__name__})") from None

    def _sdk_config(self, request: LLMRequest) -> Any:
        from google.genai import types

        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        generation = request_body(request, self.budget, self.model)["generationConfig"]
        return types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=generation["temperature"],
            top_p=generation["topP"],
            max_output_tokens=generation["maxOutputTokens"],
            seed=generation["seed"],
            thinking_config=(
                types.ThinkingConfig(thinking_budget=self.budget)
                if self.budget is not None
                else None
            ),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    def _sdk_client(self) -> Any:
        if self._sdk is None:  # built on first use, inside the running loop
            self._sdk, self._session = sdk_client(self._config, self._api_key)
        return self._sdk

    async def aclose(self) -> None:
        if self._post is not None:
            await self._post.aclose()
        if self._sdk is not None:
            await self._sdk.aio.aclose()
        if self._session is not None:
            await self._session.close()


def sdk_client(
    config: EngineConfig, api_key: str | None, *, timeout_s: float | None = None
) -> tuple[Any, Any]:
    """google-genai's client and the aiohttp session under it (close both), built inside the
    running loop. The session is ours and does not read proxies from the environment by itself:
    the proxy that applies to the URL is passed explicitly (none for a loopback URL)."""
    import aiohttp
    from google import genai
    from google.genai import types

    base_url = config.base_url or (
        f"https://{config.location}-aiplatform.googleapis.com" if config.vertex else GEMINI_URL
    )
    proxy = env_proxy(base_url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http_options = types.HttpOptions(
        base_url=config.base_url,
        timeout=int((timeout_s or config.timeout_s) * 1000),  # milliseconds
        retry_options=types.HttpRetryOptions(attempts=1),
        aiohttp_client=session,
        async_client_args={"proxy": proxy} if proxy else None,
    )
    if config.vertex:
        client = genai.Client(
            vertexai=True,
            project=config.project,
            location=config.location,
            http_options=http_options,
        )
    else:
        client = genai.Client(api_key=api_key, http_options=http_options)
    return client, session
