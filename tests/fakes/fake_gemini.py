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

import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import (
    MALFORMED,
    FakeRequest,
    FakeServer,
    Fault,
    LoggedRequest,
    count_tokens,
    serve_from_command_line,
)
from tests.fakes.batches import BatchBook, FakeBatch

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

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.book = BatchBook()
        self._uploads: dict[str, str] = {}  # upload id -> display name

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model}:generateContent", self._generate)
        vertex = "/{version}/projects/{project}/locations/{location}/publishers/google/models"
        app.router.add_post(vertex + "/{model}:generateContent", self._generate)
        app.router.add_post("/token", self._token)
        # Batch mode: the Files API (resumable upload, download) and batches.
        app.router.add_post("/upload/{version}/files", self._upload)
        app.router.add_get("/{version}/files/{file}:download", self._download)
        app.router.add_post("/{version}/models/{model}:batchGenerateContent", self._create_batch)
        app.router.add_get("/{version}/batches", self._list_batches)
        app.router.add_get("/{version}/batches/{batch}", self._get_batch)

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
        unknown = self._unknown(model)
        if unknown is not None:
            return self._error(*unknown)
        body = orjson.loads(await request.read())
        fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        self.record(request, body, fault)
        await self.delay(fault)
        if fault in MALFORMED:
            return web.Response(body=MALFORMED_BODIES[fault], content_type="application/json")
        status, payload, headers = self._content(
            model, body, fault, request.headers.get("x-goog-api-key", "")
        )
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=headers,
        )

    # Batch mode --------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        """The resumable upload protocol: ``start`` (metadata) answers the upload URL, then
        ``upload, finalize`` sends the bytes and answers the file."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        command = request.headers.get("X-Goog-Upload-Command", "")
        if command == "start":
            meta = orjson.loads(await request.read() or b"{}").get("file") or {}
            upload_id = self.book.new_id("upload-")
            self._uploads[upload_id] = meta.get("displayName") or meta.get("display_name") or ""
            url = f"{self.url}{request.path}?upload_id={upload_id}"
            return web.json_response(
                {}, headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"}
            )
        assert "finalize" in command, command
        data = await request.read()
        file_id = self.book.add_file(data, prefix="in-")
        display = self._uploads.pop(request.query["upload_id"], "")
        return web.json_response(
            {"file": _file_object(file_id, display, len(data), self.url)},
            headers={"X-Goog-Upload-Status": "final"},
        )

    async def _download(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        data = self.book.files.get(request.match_info["file"].removeprefix("files/"))
        if data is None:
            return self._error(404, "File not found.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        model = request.match_info["model"]
        unknown = self._unknown(model)
        if unknown is not None:
            return self._error(*unknown)
        batch = orjson.loads(await request.read())["batch"]
        file_name = batch["inputConfig"]["fileName"]
        data = self.book.files.get(file_name.removeprefix("files/"))
        if data is None:
            return self._error(400, f"{file_name} does not exist.")
        lines = [orjson.loads(raw) for raw in data.splitlines() if raw.strip()]
        created = self.book.create(
            batch.get("displayName", ""), model, file_name, lines,
            [line["key"] for line in lines], "", request.headers.get("x-goog-api-key", ""),
        )  # fmt: skip
        return web.json_response(_operation(created))

    async def _get_batch(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        batch = self.book.batches.get(request.match_info["batch"])
        if batch is None:
            return self._error(404, "Batch not found.")
        ending = self.book.ending(batch)
        if ending is not None:
            self._end(batch, ending)
        return web.json_response(_operation(batch))

    async def _list_batches(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        size = int(request.query.get("pageSize", "50"))
        start = int(request.query.get("pageToken") or 0)
        batches = self.book.newest_first()
        page = batches[start : start + size]
        payload: dict[str, Any] = {"operations": [_operation(b) for b in page]}
        if start + size < len(batches):
            payload["nextPageToken"] = str(start + size)
        return web.json_response(payload)

    def _end(self, batch: FakeBatch, state: str) -> None:
        """Run the batch's requests as the plan says and write the responses file. An expired
        batch, as Google documents, returns nothing."""
        ran = self.book.ran(batch) if state == "completed" else 0
        rows = []
        for line in batch.lines[:ran]:
            body = line["request"]
            fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
            if fault == "timeout" or fault in MALFORMED:
                fault = "500"  # a line the service could not serve
            if self.log_requests:
                self.log.append(
                    LoggedRequest(time.monotonic(), f"/batch/{batch.id}", body, {}, fault)
                )
            status, payload, _ = self._content(batch.model, body, fault, batch.auth)
            rows.append(
                {"key": line["key"], **({"response": payload} if status == 200 else payload)}
            )
        if rows:
            batch.output_file = self.book.add_file(
                b"".join(orjson.dumps(r) + b"\n" for r in rows), prefix="out-"
            )
        batch.ran = ran
        batch.state = state  # type: ignore[assignment]

    def _unknown(self, model: str) -> tuple[int, str] | None:
        if self.known_models is not None and model not in self.known_models:
            return 404, f"models/{model} is not found for API version v1beta."
        if model in self.forbidden_models:
            return 403, f"Permission denied on resource models/{model}."
        return None

    def _content(
        self, model: str, body: dict[str, Any], fault: Fault, key: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and headers of the answer to one generateContent request."""
        if fault == "429":
            return self._error_parts(
                429, "Resource has been exhausted (e.g. check quota).", retry=True
            )
        if fault == "500":
            return self._error_parts(500, "An internal error has occurred.")
        if fault == "400":
            return self._error_parts(400, "The input token count exceeds the maximum allowed.")
        if fault in ("leak400", "leak500"):
            return self._error_parts(400 if fault == "leak400" else 500, f"Bad key {key} for this.")
        messages = _messages(body)
        config = _field(body, "generationConfig") or {}
        thinking = self._thinking(model, config, messages)
        if isinstance(thinking, tuple):
            return self._error_parts(*thinking)
        text = self.answer(FakeRequest(tuple(messages), body))
        finish = "STOP"
        room = int(_field(config, "maxOutputTokens") or 8192) - thinking
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        elif count_tokens(text) > room:  # the thinking left too little room for the answer
            text, finish = text[: max(0, room) * 4], "MAX_TOKENS"
        prompt_tokens = sum(count_tokens(c) for _, c in messages)
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": count_tokens(text),
            "totalTokenCount": prompt_tokens + count_tokens(text) + thinking,
            **({"thoughtsTokenCount": thinking} if thinking else {}),
        }
        payload: dict[str, Any] = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}] if text else []},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": model,
        }
        return 200, payload, {}

    def _thinking(
        self, model: str, config: dict[str, Any], messages: list[tuple[str, str]]
    ) -> int | tuple[int, str]:
        """Tokens the model thinks before answering, or the error (status, message) for a
        budget it refuses."""
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
            return 400, "Budget 0 is invalid. This model only works in thinking mode."
        if not low <= budget <= high:
            return 400, (
                f"The thinking budget {budget} is invalid. Please choose a value between "
                f"{low} and {high}."
            )
        return budget

    def _error_parts(
        self, code: int, message: str, *, retry: bool = False, key_invalid: bool = False
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
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
        return code, {"error": error}, headers

    def _error(
        self, code: int, message: str, *, retry: bool = False, key_invalid: bool = False
    ) -> web.Response:
        status, payload, headers = self._error_parts(
            code, message, retry=retry, key_invalid=key_invalid
        )
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=headers,
        )


_BATCH_STATE = {
    "running": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "expired": "BATCH_STATE_EXPIRED",
    "failed": "BATCH_STATE_FAILED",
}


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _operation(batch: FakeBatch) -> dict[str, Any]:
    """A batch as the Gemini API shows it: a long-running operation whose metadata is the
    GenerateContentBatch."""
    name = f"batches/{batch.id}"
    meta: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "name": name,
        "model": f"models/{batch.model}",
        "displayName": batch.label,
        "inputConfig": {"fileName": batch.input_file},
        "createTime": _timestamp(batch.created),
        "updateTime": _timestamp(time.time()),
        "state": _BATCH_STATE[batch.state],
        "batchStats": {"requestCount": str(len(batch.lines))},
    }
    operation: dict[str, Any] = {"name": name, "metadata": meta, "done": batch.state != "running"}
    if batch.output_file is not None:
        output = {"responsesFile": f"files/{batch.output_file}"}
        meta["output"] = output
        operation["response"] = {"@type": meta["@type"].replace("Batch", "BatchOutput"), **output}
    if batch.state == "failed":
        operation["error"] = {"code": 3, "message": "The batch input file is not valid."}
    return operation


def _file_object(file_id: str, display: str, size: int, url: str) -> dict[str, Any]:
    return {
        "name": f"files/{file_id}",
        "displayName": display,
        "mimeType": "jsonl",
        "sizeBytes": str(size),
        "createTime": _timestamp(time.time()),
        "state": "ACTIVE",
        "uri": f"{url}/v1beta/files/{file_id}",
    }


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
    for content in body["contents"]:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append((role, "".join(p.get("text", "") for p in content["parts"])))
    return messages


def main() -> None:
    serve_from_command_line(FakeGemini, __doc__.splitlines()[0], lambda s: s.url)


if __name__ == "__main__":
    main()
