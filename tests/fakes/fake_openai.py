"""A fake OpenAI-compatible server: ``POST /v1/chat/completions`` in the OpenAI wire format, and
the Batch API (``/v1/files``, ``/v1/batches``: ``tests/fakes/batches.py`` says when a batch ends).
A batch's requests are answered as ``/v1/chat/completions`` answers them, faults included (one
draw per request; a timeout or a malformed body becomes a 500 line): the output file holds the
200s, the error file the others and, for a batch that expired, ``batch_expired`` lines.

Used by the tests (as the ``fake_openai`` fixture) and by ``bench/bench_ops.py``, which runs it
in its own process so its CPU is not charged to the client::

    python -m tests.fakes.fake_openai --latency 0.2 --share-429 0.05
    # prints the base URL (http://127.0.0.1:PORT/v1) on stdout, serves until killed
"""

from __future__ import annotations

import itertools
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

_ids = itertools.count()
# A 200 that is not a chat completion, by fault.
MALFORMED_BODIES = {
    "badjson": b'{"id": "chatcmpl-9", "object": "chat.completion", "choices": [{"index": 0, "mess',
    "nochoices": b'{"id": "chatcmpl-9", "object": "chat.completion", "usage": {"prompt_tokens": 5}}',
    "notutf8": b'{"choices": [{"message": {"content": "\xff\xfe\xfa"}}]}',
}


class FakeOpenAI(FakeServer):
    """``batch_api=False``: a server without ``/v1/files`` and ``/v1/batches`` (404 there)."""

    def __init__(self, *args: Any, batch_api: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.batch_api = batch_api
        self.book = BatchBook()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.batch_api:
            app.router.add_post("/v1/files", self._upload)
            app.router.add_get("/v1/files/{file_id}/content", self._file_content)
            app.router.add_post("/v1/batches", self._create_batch)
            app.router.add_get("/v1/batches", self._list_batches)
            app.router.add_get("/v1/batches/{batch_id}", self._get_batch)

    def _refused(self, request: web.Request) -> web.Response | None:
        if (
            self.api_key is not None
            and request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            # Quoting what was sent, as careless gateways do: the client must not repeat it.
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {sent}.", "invalid_api_key")
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = orjson.loads(await request.read())
        fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        self.record(request, body, fault)
        await self.delay(fault)
        if fault in MALFORMED:
            return web.Response(body=MALFORMED_BODIES[fault], content_type="application/json")
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        status, payload, headers = self._completion(body, fault, key)
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=headers,
        )

    def _completion(
        self, body: dict[str, Any], fault: Fault, key: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and headers of the answer to one chat request."""
        if fault == "429":
            headers = self.retry_headers()
            return (
                429,
                _error_body("Rate limit reached for requests.", "rate_limit_exceeded"),
                headers,
            )
        if fault == "500":
            return 500, _error_body("The server had an error while processing your request.", "server_error"), {}  # fmt: skip
        if fault == "400":
            message = "This model's maximum context length is 128000 tokens."
            return 400, _error_body(message, "context_length_exceeded"), {}
        if fault in ("leak400", "leak500"):
            status = 400 if fault == "leak400" else 500
            return (
                status,
                _error_body(f"Request with API key {key} could not be served.", "leak"),
                {},
            )
        messages = tuple((m["role"], m["content"]) for m in body["messages"])
        text = self.answer(FakeRequest(messages, body))
        finish = "stop"
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "length"
        prompt_tokens = sum(count_tokens(c) for _, c in messages)
        completion_tokens = count_tokens(text)
        payload = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, payload, {}

    # The Batch API ---------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField) and form["purpose"] == "batch"
        data = upload.file.read()
        file_id = self.book.add_file(data)
        return _json(_file_object(file_id, upload.filename, len(data)))

    async def _file_content(self, request: web.Request) -> web.Response:
        data = self.book.files.get(request.match_info["file_id"])
        if data is None:
            return _error(404, "No such File object.", "not_found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = orjson.loads(await request.read())
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        data = self.book.files.get(body["input_file_id"])
        if data is None:
            return _error(400, "input_file_id does not exist", "invalid_request")
        lines = [orjson.loads(raw) for raw in data.splitlines() if raw.strip()]
        assert all(line["url"] == "/v1/chat/completions" for line in lines)
        label = (body.get("metadata") or {}).get("chatumm_batch", "")
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        batch = self.book.create(
            label, lines[0]["body"]["model"], body["input_file_id"], lines,
            [line["custom_id"] for line in lines], "batch_", key,
        )  # fmt: skip
        return _json(self._batch_object(batch, body.get("metadata")))

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.book.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.", "not_found")
        ending = self.book.ending(batch)
        if ending is not None:
            self._end(batch, ending)
        return _json(self._batch_object(batch))

    async def _list_batches(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        batches = self.book.newest_first()
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        data = [self._batch_object(b) for b in page]
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(batches) > limit,
            }
        )

    def _end(self, batch: FakeBatch, state: str) -> None:
        """Run the batch's requests as the plan says, and write its output and error files."""
        ran = 0 if state == "failed" else self.book.ran(batch)
        output, errors = [], []
        for i, line in enumerate(batch.lines):
            if state == "failed":
                break
            record = {"id": f"batch_req_{batch.id}_{i}", "custom_id": line["custom_id"]}
            if i >= ran:
                message = "This request could not be executed before the completion window expired."
                errors.append({**record, "response": None, "error": {"code": "batch_expired", "message": message}})  # fmt: skip
                continue
            body = line["body"]
            fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
            if fault == "timeout" or fault in MALFORMED:
                fault = "500"  # a line the provider could not serve
            if self.log_requests:
                self.log.append(
                    LoggedRequest(time.monotonic(), f"/batch/{batch.id}", body, {}, fault)
                )
            status, payload, _ = self._completion(body, fault, batch.auth)
            result = {"status_code": status, "request_id": f"req_{batch.id}_{i}", "body": payload}
            (output if status == 200 else errors).append(
                {**record, "response": result, "error": None}
            )
        if output:
            batch.output_file = self.book.add_file(_jsonl(output))
        if errors:
            batch.error_file = self.book.add_file(_jsonl(errors))
        batch.ran = ran
        batch.state = state  # type: ignore[assignment]

    def _batch_object(self, batch: FakeBatch, metadata: Any = None) -> dict[str, Any]:
        status = {"running": "in_progress"}.get(batch.state, batch.state)
        errors = None
        if batch.state == "failed":
            errors = {"object": "list", "data": [{"code": "invalid_request", "message": "The batch input file is not valid.", "param": None, "line": None}]}  # fmt: skip
        done = batch.state != "running"
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": errors,
            "input_file_id": batch.input_file,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file,
            "error_file_id": batch.error_file,
            "created_at": int(batch.created),
            "request_counts": {
                "total": len(batch.lines),
                "completed": batch.ran if done else 0,
                "failed": len(batch.lines) - batch.ran if done else 0,
            },
            "metadata": metadata if metadata is not None else {"chatumm_batch": batch.label},
        }


def _file_object(file_id: str, filename: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": "batch",
        "status": "processed",
    }


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(_error_body(message, code)),
        content_type="application/json",
        headers=headers,
    )


def main() -> None:
    serve_from_command_line(FakeOpenAI, __doc__.splitlines()[0], lambda s: s.base_url)


if __name__ == "__main__":
    main()
