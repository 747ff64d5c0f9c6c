"""The OpenAI chat API and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp).

Three transports behind one class, chosen by measurement (``bench/bench_transport.py``: 2,000
requests to the fake server in another process, 200 ms latency, uvloop, this 2-core machine,
clients alternated over 2-3 rounds):

==========================  ====================  ====================  ===============
client                      CPU ms/req at 64      CPU ms/req at 256     req/s at 256
==========================  ====================  ====================  ===============
bare aiohttp + semaphore    0.28-0.30             0.24-0.28             1061-1087
this backend, ``http1``     0.10-0.12             0.09-0.15             1064-1157
this backend, ``aiohttp``   0.26-0.32             0.29-0.30             1068-1081
this backend, ``sdk``       3.2-3.6               4.0-4.5               218-244
==========================  ====================  ====================  ===============

- ``http1`` (the default): one ``POST {base_url}/chat/completions`` through
  ``ops.engine.http1``, keep-alive connections and llhttp, orjson in and out, only the fields
  we use read from the answer. A third of aiohttp's CPU: the session machinery it skips is
  most of an aiohttp request's cost.
- ``aiohttp``: the same request on an ``aiohttp.ClientSession``; ``auto`` picks it when a proxy
  environment variable (``HTTPS_PROXY`` or ``HTTP_PROXY`` by the URL's scheme, less ``NO_PROXY``)
  applies to the URL, since http1 speaks to the server directly. The proxy is looked up once:
  aiohttp's ``trust_env`` looks it up for every request, at ~0.6 ms of CPU each.
- ``sdk``: ``openai.AsyncOpenAI(...).chat.completions.create`` with its retries off (the engine
  retries). Its httpx transport and pydantic models cost ten times the CPU and cap a process
  near 200 requests/s; kept for what only the SDK does (Azure and organisation/project
  headers, new auth schemes) and as the wire-format reference: the tests run all three against
  the same fake server, so the fake and the fast paths are checked against the real client.

All raise the engine's errors (``ops.engine.errors``), never a transport's.
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
    import yarl

OPENAI_URL = "https://api.openai.com/v1"
Transport = Literal["auto", "http1", "aiohttp", "sdk"]
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
        transport: Transport = "auto",
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
        # Read once: aiohttp's trust_env reads them again for every request (~0.6 ms CPU).
        self._proxy = env_proxy(self._url)
        if transport == "auto":
            transport = "http1" if self._proxy is None else "aiohttp"
        self.transport = transport
        self._http1: HTTP1Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._yarl_url: yarl.URL | None = None
        self._sdk: Any = None
        if transport == "sdk":
            import openai

            self._sdk = openai.AsyncOpenAI(
                api_key=api_key or "none",
                base_url=self._base_url,
                max_retries=0,
                timeout=config.timeout_s,
            )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self.transport == "http1":
            return await self._complete_http1(request)
        if self.transport == "aiohttp":
            return await self._complete_aiohttp(request)
        return await self._complete_sdk(request)

    async def _complete_http1(self, request: LLMRequest) -> LLMResponse:
        if self._http1 is None:  # created on first use, inside the running loop
            self._http1 = HTTP1Client(self._url, headers=self._headers, timeout_s=self._timeout)
        try:
            answer = await self._http1.post(_encode(self.model, request))
        except HTTP1Error as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if answer.status != 200:
            raise classify_status(
                answer.status, _error_message(answer.body), parse_retry_after(answer.headers)
            )
        return _response(answer.body, self.model)

    async def _complete_aiohttp(self, request: LLMRequest) -> LLMResponse:
        # Imported here: the default transport does without aiohttp's 0.2 s of import.
        import aiohttp
        import yarl

        if self._session is None or self._yarl_url is None:
            # Created on first use, inside the running loop; one connection per slot.
            # The headers are the session's: a request's own would be merged into them anew
            # every time.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers=self._headers,
            )
            self._yarl_url = yarl.URL(self._url)  # parsed once, not per request
        try:
            async with self._session.post(
                self._yarl_url, data=_encode(self.model, request), proxy=self._proxy
            ) as resp:
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
        choice = out.choices[0]
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


def _encode(model: str, request: LLMRequest) -> bytes:
    # orjson's bytes keep the capacity its writer grew to (~32 KB for a 3 KB prompt); an exact
    # copy costs well under a microsecond and ~28 KB less per request in flight.
    return bytes(memoryview(orjson.dumps(_body(model, request))))


def _response(raw: bytes, model: str) -> LLMResponse:
    data = orjson.loads(raw)
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return LLMResponse(
        text=choice["message"].get("content") or "",
        finish_reason=_FINISH.get(choice.get("finish_reason"), "stop"),
        model=data.get("model") or model,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
    )


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
