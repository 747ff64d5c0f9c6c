"""The OpenAI chat API and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp).

Two transports behind one class, chosen by measurement (``bench/bench_transport.py``: 2,000
requests to the fake server in another process, 200 ms latency, this 2-core machine):

==========================  ===============  ================  ===============
client                      CPU ms/request   req/s at 64       req/s at 256
==========================  ===============  ================  ===============
bare aiohttp + semaphore    0.28-0.37        267-298           762-1052
this backend, ``aiohttp``   0.37-0.48        267-296           701-1024
this backend, ``sdk``       3.9-4.4          145-190           234
==========================  ===============  ================  ===============

- ``aiohttp`` (default): one ``POST {base_url}/chat/completions`` on a shared session, orjson
  in and out, only the fields we use read from the answer.
- ``sdk``: ``openai.AsyncOpenAI(...).chat.completions.create`` with its retries off (the engine
  retries). Its httpx transport and pydantic models cost ten times the CPU and cap a process
  near 200 requests/s; kept for what only the SDK does (Azure and organisation/project
  headers, new auth schemes) and as the wire-format reference: the tests run both against the
  same fake server, so the fake and the fast path are checked against the real client.

Both raise the engine's errors (``ops.engine.errors``), never a transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import aiohttp
import orjson
import yarl

from ops.engine.config import EngineConfig
from ops.engine.errors import TransientError, classify_status, parse_retry_after
from ops.protocol import FinishReason, LLMRequest, LLMResponse

OPENAI_URL = "https://api.openai.com/v1"
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
        transport: Literal["aiohttp", "sdk"] = "aiohttp",
        name: str = "openai",
        max_concurrency: int | None = None,
        send_key: bool = True,
    ):
        self.name = name
        self.model = config.model
        self.max_concurrency = max_concurrency
        self._base_url = (config.base_url or OPENAI_URL).rstrip("/")
        self._url = yarl.URL(self._base_url + "/chat/completions")  # parsed once, not per request
        # A custom server (vLLM, llama.cpp) usually needs no key; api.openai.com does.
        api_key = config.api_key(required=config.base_url is None) if send_key else None
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = config.timeout_s
        self._transport = transport
        self._session: aiohttp.ClientSession | None = None
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
        if self._sdk is not None:
            return await self._complete_sdk(request)
        if self._session is None:
            # Created on first use, inside the running loop; one connection per slot.
            # The headers are the session's: a request's own would be merged into them anew
            # every time.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers=self._headers,
            )
        # orjson's bytes keep the capacity its writer grew to (~32 KB for a 3 KB prompt); an
        # exact copy costs well under a microsecond and ~28 KB less per request in flight.
        body = bytes(memoryview(orjson.dumps(_body(self.model, request))))
        try:
            async with self._session.post(self._url, data=body) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise classify_status(
                        resp.status, _error_message(raw), parse_retry_after(resp.headers)
                    )
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        data = orjson.loads(raw)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return LLMResponse(
            text=choice["message"].get("content") or "",
            finish_reason=_FINISH.get(choice.get("finish_reason"), "stop"),
            model=data.get("model") or self.model,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

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
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()


def _error_message(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw[:500].decode(errors="replace")
