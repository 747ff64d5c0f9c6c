"""Google's Gemini API through google-genai, ``client.aio.models.generate_content``.

``--base-url`` overrides the endpoint (``HttpOptions.base_url``: a proxy, a regional gateway,
or the test's fake server). The SDK's own retries are off (``attempts=1``, which also stops
its implicit sleep-and-retry on connection errors): the engine retries, honouring the
server's ``Retry-After`` header or the ``RetryInfo.retryDelay`` in Google's error body.
With aiohttp installed, google-genai sends over aiohttp; its pydantic response models cost
CPU, but Gemini's own rate limits, not this client, bound a Gemini run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from google import genai
from google.genai import errors, types

from ops.engine.config import EngineConfig
from ops.engine.errors import TransientError, classify_status, parse_retry_after
from ops.protocol import FinishReason, LLMRequest, LLMResponse

# Any other reason (SAFETY, RECITATION, BLOCKLIST, OTHER, ...) or no candidate at all (a
# blocked prompt) is a refusal: "content_filter", a failure the operation retries.
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "MAX_TOKENS": "length",
}


class GeminiBackend:
    name = "gemini"
    max_concurrency: int | None = None

    def __init__(self, config: EngineConfig):
        self.model = config.model
        http_options = types.HttpOptions(
            base_url=config.base_url,
            timeout=int(config.timeout_s * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(
            api_key=config.api_key(required=True), http_options=http_options
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        p = request.params
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        contents = [
            types.Content(
                role="model" if m.role == "assistant" else "user",
                parts=[types.Part(text=m.content)],
            )
            for m in request.messages
            if m.role != "system"
        ]
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=p.temperature,
            top_p=p.top_p,
            max_output_tokens=p.max_tokens,
            seed=p.seed + 1_000_003 * p.attempt,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        try:
            out = await self._client.aio.models.generate_content(
                model=self.model, contents=contents, config=config
            )
        except errors.APIError as exc:
            raise classify_status(exc.code, exc.message or str(exc), _retry_after(exc)) from exc
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            # google-genai sends over aiohttp (a core dependency here) when it is installed.
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        candidate = out.candidates[0] if out.candidates else None
        reason = candidate.finish_reason.value if candidate and candidate.finish_reason else "STOP"
        text = (
            "".join(part.text or "" for part in candidate.content.parts or [])
            if candidate and candidate.content
            else ""
        )
        usage = out.usage_metadata
        return LLMResponse(
            text=text,
            finish_reason=_FINISH.get(reason, "content_filter") if candidate else "content_filter",
            model=out.model_version or self.model,
            prompt_tokens=(usage.prompt_token_count or 0) if usage else 0,
            completion_tokens=(usage.candidates_token_count or 0) if usage else 0,
        )

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def _retry_after(exc: errors.APIError) -> float | None:
    """Retry-After header, else Google's ``RetryInfo.retryDelay`` ("1.5s") in the error body."""
    seconds = parse_retry_after(getattr(exc.response, "headers", None))
    if seconds is not None:
        return seconds
    details: Any = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for detail in details.get("details", []) if isinstance(details, dict) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                pass
    return None
