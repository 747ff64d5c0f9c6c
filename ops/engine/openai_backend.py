"""The OpenAI chat API and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp).

One ``POST {base_url}/chat/completions`` per request, orjson in and out, only the fields we use
read from the answer, sent through ``ops.engine.transport`` (``ops.engine.http1``, or aiohttp
where an environment proxy applies to the URL). ``client="sdk"`` sends through
``openai.AsyncOpenAI`` instead (its retries off: the engine retries), for what only the SDK does
(Azure and organisation/project headers, new auth schemes) and as the wire-format reference the
tests check the fast path against. Why a private client is the default: without it the engine
misses its wall-time target against a bare aiohttp loop (bench/results/bench_ops.md).

Contract: every failure is one of the engine's errors (``ops.engine.errors``), never a
transport's; a refused key or an unknown model is a ``BackendConfigError`` naming the key's
variable or the model. A loopback URL never goes through a proxy.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ops.engine.config import EngineConfig
from ops.engine.errors import TransientError, classify_status, parse_retry_after
from ops.engine.transport import JSONPost, json_bytes
from ops.protocol import FinishReason, LLMRequest, LLMResponse

OPENAI_URL = "https://api.openai.com/v1"
Client = Literal["http", "sdk"]
_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    None: "stop",
}


def request_body(model: str, request: LLMRequest) -> dict[str, Any]:
    p = request.params
    return {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_tokens,
        "seed": p.seed + 1_000_003 * p.attempt,  # a new attempt is a new sample
    }


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        config: EngineConfig,
        *,
        client: Client = "http",
        name: str = "openai",
        max_concurrency: int | None = None,
        send_key: bool = True,
    ):
        self.name = name
        self.model = config.model
        self.max_concurrency = max_concurrency
        self._key_env = config.key_source()
        base_url = (config.base_url or OPENAI_URL).rstrip("/")
        # A custom server (vLLM, llama.cpp) usually needs no key; api.openai.com does.
        api_key = config.api_key(required=config.base_url is None) if send_key else None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._post = JSONPost(base_url + "/chat/completions", headers, config.timeout_s)
        self.client = client
        self._sdk: Any = None
        if client == "sdk":
            import openai

            self._sdk = openai.AsyncOpenAI(
                api_key=api_key or "none",
                base_url=base_url,
                max_retries=0,
                timeout=config.timeout_s,
            )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._sdk is not None:
            return await self._complete_sdk(request)
        answer = await self._post.post(json_bytes(request_body(self.model, request)))
        if answer.status != 200:
            raise classify_status(
                answer.status,
                _error_message(answer.body),
                parse_retry_after(answer.headers),
                key_env=self._key_env,
                model=self.model,
            )
        return _response(answer.body, self.model)

    async def _complete_sdk(self, request: LLMRequest) -> LLMResponse:
        import openai

        try:
            out = await self._sdk.chat.completions.create(**request_body(self.model, request))
        except openai.APIStatusError as exc:
            raise classify_status(
                exc.status_code,
                exc.message,
                parse_retry_after(exc.response.headers),
                key_env=self._key_env,
                model=self.model,
            ) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except (openai.APIResponseValidationError, ValueError) as exc:  # a body not JSON
            raise TransientError(f"malformed 200 reply ({type(exc).__name__})") from None
        choices = getattr(out, "choices", None)
        choice = choices[0] if isinstance(choices, list) and choices else None
        if choice is None or getattr(choice, "message", None) is None:
            raise TransientError("malformed 200 reply: no choices")
        return LLMResponse(
            text=choice.message.content or "",
            finish_reason=_FINISH.get(choice.finish_reason, "stop"),
            model=out.model or self.model,
            prompt_tokens=out.usage.prompt_tokens if out.usage else 0,
            completion_tokens=out.usage.completion_tokens if out.usage else 0,
        )

    async def aclose(self) -> None:
        await self._post.aclose()
        if self._sdk is not None:
            await self._sdk.close()


def _response(raw: bytes, model: str) -> LLMResponse:
    """The answer in a 200 body. A body that is not a chat completion (not UTF-8 JSON, no
    ``choices``, no message) is a ``TransientError``: a gateway or an overloaded server answered
    for the model, and asking again is what helps."""
    try:
        return completion_response(orjson.loads(raw), model)
    except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError, ValueError) as exc:
        raise malformed_reply(raw, exc) from None


def completion_response(data: Any, model: str) -> LLMResponse:
    """The ``LLMResponse`` of a chat completion as JSON (dicts and lists); LookupError,
    TypeError, AttributeError or ValueError when it is not one."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    usage = data.get("usage") or {}
    return LLMResponse(
        text=text if isinstance(text, str) else str(text),
        finish_reason=_FINISH.get(choice.get("finish_reason"), "stop"),
        model=data.get("model") or model,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def malformed_reply(raw: bytes, exc: Exception) -> TransientError:
    """The error for a 200 body that is not the answer, with the start of the body to see why."""
    head = raw[:200].decode(errors="replace")
    return TransientError(f"malformed 200 reply ({type(exc).__name__}): {head!r}")


def _error_message(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw[:500].decode(errors="replace")
