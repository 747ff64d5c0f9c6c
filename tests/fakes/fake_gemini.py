"""A fake Gemini API: ``POST /{version}/models/{model}:generateContent`` in Google's wire format.

Errors use Google's shape (``{"error": {"code", "message", "status", "details"}}``); a 429
carries both a ``Retry-After`` header and a ``google.rpc.RetryInfo`` detail.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from tests.fakes._server import FakeRequest, FakeServer, count_tokens

_STATUS = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


class FakeGemini(FakeServer):
    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model}:generateContent", self._generate)

    async def _generate(self, request: web.Request) -> web.Response:
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return self._error(401, "API key not valid. Please pass a valid API key.")
        body = orjson.loads(await request.read())
        fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        self.record(request, body, fault)
        await self.delay(fault)
        if fault == "429":
            return self._error(429, "Resource has been exhausted (e.g. check quota).", retry=True)
        if fault == "500":
            return self._error(500, "An internal error has occurred.")
        system = body.get("systemInstruction") or body.get("system_instruction")
        messages: list[tuple[str, str]] = []
        if system:
            messages.append(("system", "".join(p.get("text", "") for p in system["parts"])))
        for content in body["contents"]:
            role = "assistant" if content.get("role") == "model" else "user"
            messages.append((role, "".join(p.get("text", "") for p in content["parts"])))
        text = self.answer(FakeRequest(tuple(messages), body))
        finish = "STOP"
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        prompt_tokens = sum(count_tokens(c) for _, c in messages)
        completion_tokens = count_tokens(text)
        payload = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": completion_tokens,
                "totalTokenCount": prompt_tokens + completion_tokens,
            },
            "modelVersion": request.match_info["model"],
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    def _error(self, code: int, message: str, *, retry: bool = False) -> web.Response:
        error: dict[str, object] = {"code": code, "message": message, "status": _STATUS[code]}
        headers: dict[str, str] = {}
        if retry and self.faults.retry_after_s is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{self.faults.retry_after_s:g}s",
                }
            ]
            headers = self.retry_headers()
        return web.Response(
            status=code,
            body=orjson.dumps({"error": error}),
            content_type="application/json",
            headers=headers,
        )
