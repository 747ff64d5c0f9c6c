"""The OpenAI chat API and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp).

One ``POST {base_url}/chat/completions`` per request, orjson in and out, only the fields we use
read from the answer, sent through ``ops.engine.http1``; where an environment proxy applies to
the URL (``HTTPS_PROXY``/``HTTP_PROXY`` by scheme, less ``NO_PROXY``; looked up once), the same
request goes through aiohttp, which speaks to proxies. ``client="sdk"`` sends through
``openai.AsyncOpenAI`` instead (its retries off: the engine retries), for what only the SDK does
(Azure and organisation/project headers, new auth schemes) and as the wire-format reference the
tests check the fast path against. Why a private client is the default: without it the engine
misses its wall-time target against a bare aiohttp loop (bench/results/bench_ops.md).

Contract: every failure is one of the engine's errors (``ops.engine.errors``), never a
transport's. A loopback URL never goes through a proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import orjson

from ops.engine.config import EngineConfig
from ops.engine.errors import TransientError, classify_status, parse_retry_after
from ops.engine.http1 import HTTP1Client, HTTP1Error
from ops.protocol import FinishReason, LLMRequest, LLMResponse

if TYPE_CHECKING:
    import aiohttp

OPENAI_URL = "https://api.openai.com/v1"
Client = Literal["aiohttp", "sdk"]
_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    None: "stop",
}


def _body(model: str, request: LLMRequest) -> dict[str, Any]:
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
        client: Client = "aiohttp",
        name: str = "openai",
        max_concurrency: int | None = None,
        send_key: bool = True,
    ):
        self.name = name
        self.model = config.model
        self.max_concurrency = max_concurrency
        self._base_url = (config.base_url or OPENAI_URL).rstrip("/")
        self._url = self._base_url + "/chat/completions"
        # A custom server (vLLM, llama.cpp) usually needs no key; api.openai.com does.
        api_key = config.api_key(required=config.base_url is None) if send_key else None
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = config.timeout_s
        self._proxy = env_proxy(self._url)
        self.client = client
        self._http1: HTTP1Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sdk: Any = None
        if client == "sdk":
            import openai

            self._sdk = openai.AsyncOpenAI(
                api_key=api_key or "none",
                base_url=self._base_url,
                max_retries=0,
                timeout=config.timeout_s,
            )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._sdk is not None:
            return await self._complete_sdk(request)
        if self._proxy is not None:
            return await self._complete_aiohttp(request)
        if self._http1 is None:  # created on first use, inside the running loop
            self._http1 = HTTP1Client(self._url, headers=self._headers, timeout_s=self._timeout)
        try:
            answer = await self._http1.post(orjson.dumps(_body(self.model, request)))
        except HTTP1Error as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if answer.status != 200:
            raise classify_status(
                answer.status, _error_message(answer.body), parse_retry_after(answer.headers)
            )
        return _response(answer.body, self.model)

    async def _complete_aiohttp(self, request: LLMRequest) -> LLMResponse:
        import aiohttp

        if self._session is None:  # created on first use, inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the engine bounds requests in flight
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers=self._headers,
            )
        body = orjson.dumps(_body(self.model, request))
        try:
            async with self._session.post(self._url, data=body, proxy=self._proxy) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise classify_status(
                        resp.status, _error_message(raw), parse_retry_after(resp.headers)
                    )
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return _response(raw, self.model)

    async def _complete_sdk(self, request: LLMRequest) -> LLMResponse:
        import openai

        try:
            out = await self._sdk.chat.completions.create(**_body(self.model, request))
        except openai.APIStatusError as exc:
            raise classify_status(
                exc.status_code, exc.message, parse_retry_after(exc.response.headers)
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
        if self._http1 is not None:
            await self._http1.aclose()
            self._http1 = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()


def _response(raw: bytes, model: str) -> LLMResponse:
    """The answer in a 200 body. A body that is not a chat completion (not UTF-8 JSON, no
    ``choices``, no message) is a ``TransientError``: a gateway or an overloaded server answered
    for the model, and asking again is what helps."""
    try:
        data = orjson.loads(raw)
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
    except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError, ValueError) as exc:
        raise malformed_reply(raw, exc) from None


def malformed_reply(raw: bytes, exc: Exception) -> TransientError:
    """The error for a 200 body that is not the answer, with the start of the body to see why."""
    head = raw[:200].decode(errors="replace")
    return TransientError(f"malformed 200 reply ({type(exc).__name__}): {head!r}")


def env_proxy(url: str) -> str | None:
    """The proxy the environment variables (``HTTPS_PROXY``, ``NO_PROXY``, ...) route ``url``
    through, read the way aiohttp's ``trust_env`` reads them; None for none.

    A loopback host never goes through one, as in Go's net/http: a proxy cannot reach this
    machine's loopback, and a local server (the ``local`` backend's, a vLLM on 127.0.0.1) must
    keep working on a machine whose environment sets a proxy for the internet."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_loopback(host):
        return None
    proxy = getproxies().get(parts.scheme)
    return None if proxy is None or proxy_bypass(host) else proxy


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_message(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw[:500].decode(errors="replace")
