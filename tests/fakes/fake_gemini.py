"""A fake Gemini API in Google's wire format, for google-genai and the gemini backend's own path.

Routes: ``POST /{version}/models/{model}:generateContent`` (the Gemini API, key in
``x-goog-api-key``), the Vertex AI route ``POST /{version}/projects/{p}/locations/{l}/publishers/
google/models/{model}:generateContent`` (a bearer token), and ``POST /token``, an OAuth token
endpoint that application-default credentials can be pointed at.

What it models, as Google's servers behave:
- errors in Google's shape (``{"error": {"code", "message", "status", "details"}}``); a 429
  carries a ``Retry-After`` header and a ``google.rpc.RetryInfo`` detail; a wrong API key is
  400 INVALID_ARGUMENT with reason API_KEY_INVALID, an unknown model 404 NOT_FOUND, a model in
  ``forbidden_models`` 403 PERMISSION_DENIED;
- thinking (``THINKING`` below): a 2.5 model thinks before it answers, and its thinking tokens
  count against ``maxOutputTokens``. With a ``thinkingBudget`` it spends all of it; without one
  it spends 300-1500 tokens (drawn from the prompt). 2.5 Pro refuses a budget of 0. An answer
  that does not fit after the thinking ends at MAX_TOKENS, cut; ``thoughtsTokenCount`` reports
  the thinking apart from ``candidatesTokenCount``;
- malformed 200s (``badjson``, ``nochoices`` = neither candidates nor promptFeedback,
  ``notutf8``) and errors quoting the key (``leak400``, ``leak500``), as in the OpenAI fake.

    python -m tests.fakes.fake_gemini --latency 0.2   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import (
    MALFORMED,
    FakeRequest,
    FakeServer,
    FaultPlan,
    count_tokens,
    echo_answer,
)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
}
# Model family -> (smallest budget, largest budget, whether 0 turns thinking off).
THINKING = {
    "gemini-2.5-pro": (128, 32768, False),
    "gemini-2.5-flash-lite": (512, 24576, True),
    "gemini-2.5-flash": (1, 24576, True),
}
MALFORMED_BODIES = {
    "badjson": b'{"candidates": [{"content": {"role": "model", "parts": [{"text": "cut o',
    "nochoices": b'{"usageMetadata": {"promptTokenCount": 5}, "modelVersion": "x"}',
    "notutf8": b'{"candidates": [{"content": {"parts": [{"text": "\xff\xfe"}]}}]}',
}
ACCESS_TOKEN = "ya29.fake-access-token"


def thinking_family(model: str) -> tuple[int, int, bool] | None:
    return next((v for k, v in THINKING.items() if model.startswith(k)), None)


class FakeGemini(FakeServer):
    # Models that exist; any other name is a 404. None: every name exists.
    known_models: frozenset[str] | None = None
    forbidden_models: frozenset[str] = frozenset()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model}:generateContent", self._generate)
        vertex = "/{version}/projects/{project}/locations/{location}/publishers/google/models"
        app.router.add_post(vertex + "/{model}:generateContent", self._generate)
        app.router.add_post("/token", self._token)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.record(request, dict(form), "ok")
        payload = {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    def _refused(self, request: web.Request) -> web.Response | None:
        """The error for a request whose credentials are wrong, or None."""
        if "project" in request.match_info:
            if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                return self._error(401, "Request had invalid authentication credentials.")
            return None
        sent = request.headers.get("x-goog-api-key")
        if self.api_key is not None and sent != self.api_key:
            return self._error(
                400, f"API key not valid. Please pass a valid API key. ({sent})", key_invalid=True
            )
        return None

    async def _generate(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        model = request.match_info["model"]
        if self.known_models is not None and model not in self.known_models:
            return self._error(404, f"models/{model} is not found for API version v1beta.")
        if model in self.forbidden_models:
            return self._error(403, f"Permission denied on resource models/{model}.")
        body = orjson.loads(await request.read())
        fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        self.record(request, body, fault)
        await self.delay(fault)
        if fault == "429":
            return self._error(429, "Resource has been exhausted (e.g. check quota).", retry=True)
        if fault == "500":
            return self._error(500, "An internal error has occurred.")
        if fault in ("leak400", "leak500"):
            key = request.headers.get("x-goog-api-key", "")
            return self._error(400 if fault == "leak400" else 500, f"Bad key {key} for this.")
        if fault in MALFORMED:
            return web.Response(body=MALFORMED_BODIES[fault], content_type="application/json")
        messages = _messages(body)
        config = _field(body, "generationConfig") or {}
        thinking = self._thinking(model, config, messages)
        if isinstance(thinking, web.Response):
            return thinking
        text = self.answer(FakeRequest(tuple(messages), body))
        finish = "STOP"
        room = int(_field(config, "maxOutputTokens") or 8192) - thinking
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        elif count_tokens(text) > room:  # the thinking left too little room for the answer
            text, finish = text[: max(0, room) * 4], "MAX_TOKENS"
        payload: dict[str, object] = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}] if text else []},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": sum(count_tokens(c) for _, c in messages),
                "candidatesTokenCount": count_tokens(text),
                "totalTokenCount": 0,  # filled below
                **({"thoughtsTokenCount": thinking} if thinking else {}),
            },
            "modelVersion": model,
        }
        usage = payload["usageMetadata"]
        assert isinstance(usage, dict)
        usage["totalTokenCount"] = (
            usage["promptTokenCount"] + usage["candidatesTokenCount"] + thinking
        )
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    def _thinking(
        self, model: str, config: dict[str, Any], messages: list[tuple[str, str]]
    ) -> int | web.Response:
        """Tokens the model thinks before answering, or the error for a budget it refuses."""
        family = thinking_family(model)
        if family is None:
            return 0
        low, high, can_disable = family
        thinking_config = _field(config, "thinkingConfig") or {}
        budget = _field(thinking_config, "thinkingBudget")  # type: ignore[arg-type]
        if budget is None or budget == -1:  # dynamic: as much as the prompt seems to need
            digest = hashlib.sha256(repr(messages).encode()).digest()
            return 300 + int.from_bytes(digest[:4], "little") % 1201
        assert isinstance(budget, int)
        if budget == 0:
            if can_disable:
                return 0
            return self._error(400, "Budget 0 is invalid. This model only works in thinking mode.")
        if not low <= budget <= high:
            return self._error(
                400, f"The thinking budget {budget} is invalid. Please choose a value between "
                f"{low} and {high}."
            )  # fmt: skip
        return budget

    def _error(
        self, code: int, message: str, *, retry: bool = False, key_invalid: bool = False
    ) -> web.Response:
        error: dict[str, object] = {"code": code, "message": message, "status": _STATUS[code]}
        headers: dict[str, str] = {}
        if key_invalid:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
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


def _field(obj: Any, camel: str) -> Any:
    """A field of a request in proto JSON, which Google accepts in lowerCamelCase or snake_case
    (google-genai sends ``thinkingConfig: {"thinking_budget": ...}``)."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake)) if isinstance(obj, dict) else None


def _messages(body: dict[str, object]) -> list[tuple[str, str]]:
    """(role, text) of a generateContent body: the system instruction, then the contents."""
    system = body.get("systemInstruction") or body.get("system_instruction")
    messages: list[tuple[str, str]] = []
    if isinstance(system, dict):
        messages.append(("system", "".join(p.get("text", "") for p in system["parts"])))
    for content in body["contents"]:  # type: ignore[attr-defined]
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append((role, "".join(p.get("text", "") for p in content["parts"])))
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keyed-faults", action="store_true", help="see FaultPlan.keyed")
    parser.add_argument("--answer", default="", help="module:function, FakeRequest -> text")
    parser.add_argument("--answer-table", type=Path, help="JSON {sha256(prompt): answer}")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    plan = FaultPlan(
        share={"429": args.share_429},
        retry_after_s=args.retry_after,
        seed=args.seed,
        keyed=args.keyed_faults,
    )
    answer = echo_answer
    if args.answer:
        module, _, function = args.answer.partition(":")
        answer = getattr(importlib.import_module(module), function)
    if args.answer_table:
        from tests.fakes.answers import AnswerTable

        answer = AnswerTable.load(args.answer_table, answer)
    server = FakeGemini(answer, latency_s=args.latency, faults=plan, log_requests=False).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
