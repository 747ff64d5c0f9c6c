"""The OpenAI Batch API (and OpenAI-compatible servers that serve it), for ``BatchBackend``.

Through the ``openai`` SDK (a few calls per batch, so its CPU cost does not matter here):

    POST /v1/files (purpose "batch")     the JSONL input, one chat request per line:
                                          {"custom_id", "method": "POST",
                                           "url": "/v1/chat/completions", "body"}
    POST /v1/batches                      endpoint /v1/chat/completions, completion_window 24h,
                                          metadata {"chatumm_batch": label}
    GET  /v1/batches/{id}                 validating | in_progress | finalizing | cancelling,
                                          then completed | expired | cancelled | failed
    GET  /v1/files/{id}/content           output_file_id: {"custom_id", "response":
                                          {"status_code", "body"}}; error_file_id: the same,
                                          or {"custom_id", "error": {"code", "message"}}
    GET  /v1/batches?limit=100            newest first: a batch found again by its label

Limits (API reference, POST /v1/batches): 50,000 requests and 200 MB per input file. An expired
or cancelled batch returns the answers of the requests that ran; the others are in the error
file with code ``batch_expired`` / ``batch_cancelled`` (or missing) and go out again. A request
refused inside a batch (a 400 line) is a ``RequestError``, a 5xx or 429 line a
``TransientError``, as online. A server without ``/v1/files`` or ``/v1/batches`` (404, 405 or
501 on submission) is a ``BackendConfigError`` that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson

from ops.engine.batch import BatchStatus, Outcome, not_served
from ops.engine.config import EngineConfig
from ops.engine.errors import (
    RequestError,
    TransientError,
    classify_status,
    parse_retry_after,
)
from ops.engine.openai_backend import OPENAI_URL, completion_response, request_body
from ops.engine.transport import json_bytes
from ops.protocol import LLMRequest

ENDPOINT: Final = "/v1/chat/completions"
ROUTES = "/v1/files and /v1/batches"
LABEL_KEY = "chatumm_batch"
LIMITS = (50_000, 200_000_000)
FILE_TIMEOUT_S = 600.0  # uploading or reading a file of up to 200 MB
_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
CLOCK_SKEW_S = 3600.0  # list batches back to this long before a record's time


class OpenAIBatchAPI:
    name = "openai"
    limits = LIMITS

    def __init__(self, config: EngineConfig):
        import openai

        self.model = config.model
        self._key_env = config.key_source()
        self._base_url = (config.base_url or OPENAI_URL).rstrip("/")
        api_key = config.api_key(required=config.base_url is None)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "none",
            base_url=self._base_url,
            max_retries=0,  # BatchBackend retries
            timeout=config.timeout_s,
        )
        self._file_timeout = max(config.timeout_s, FILE_TIMEOUT_S)

    def line(self, custom_id: str, request: LLMRequest) -> bytes:
        body = request_body(self.model, request)
        return json_bytes({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})

    async def submit(self, label: str, body: bytes) -> str:
        async with self._translated("POST /files", submitting=True):
            file = await self._client.files.create(
                file=(f"{label}.jsonl", body, "application/jsonl"),
                purpose="batch",
                timeout=self._file_timeout,
            )
        async with self._translated("POST /batches", submitting=True):
            batch = await self._client.batches.create(
                input_file_id=file.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={LABEL_KEY: label},
            )
        return str(batch.id)

    async def find(self, label: str, since: float) -> str | None:
        """Newest first, back to an hour before ``since``. A server that cannot list its
        batches cannot say: None (the requests go out again)."""
        try:
            async with self._translated("GET /batches"):
                async for batch in self._client.batches.list(limit=100):
                    if (batch.metadata or {}).get(LABEL_KEY) == label:
                        return str(batch.id)
                    if batch.created_at < since - CLOCK_SKEW_S:
                        break
        except (TransientError, RequestError) as exc:
            if exc.status not in (404, 405, 501):
                raise
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        try:
            async with self._translated(f"GET /batches/{batch_id}"):
                batch = await self._client.batches.retrieve(batch_id)
        except TransientError as exc:
            if exc.status != 404:
                raise
            gone = TransientError(f"batch {batch_id} is gone from the server")
            return BatchStatus(True, "not found", (), gone)
        status = batch.status
        if status in _RUNNING:
            return BatchStatus(False, status)
        files = tuple(f for f in (batch.output_file_id, batch.error_file_id) if f)
        missing: Exception | None = None
        if status == "failed":
            reasons = (
                [f"{e.code}: {e.message}" for e in (batch.errors.data or [])]
                if batch.errors
                else []
            )
            missing = RequestError(
                f"the provider refused batch {batch_id}: {'; '.join(reasons) or 'no reason given'}"
            )
        elif status != "completed":  # expired, cancelled
            missing = TransientError(f"batch {batch_id} {status} before this request ran")
        return BatchStatus(True, status, files, missing)

    async def results(self, status: BatchStatus) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for file_id in status.files:
            try:
                async with self._translated(f"GET /files/{file_id}/content"):
                    content = await self._client.files.content(file_id, timeout=self._file_timeout)
            except TransientError as exc:
                if exc.status != 404:
                    raise
                continue  # a file that is gone: its requests count as not run
            for raw in content.content.splitlines():
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                    outcomes[line["custom_id"]] = self._outcome(line)
        return outcomes

    def _outcome(self, line: dict[str, Any]) -> Outcome:
        """The answer or the error of one result line."""
        response = line.get("response") or {}
        status, body = response.get("status_code"), response.get("body")
        if status == 200:
            try:
                return completion_response(body, self.model)
            except (LookupError, TypeError, AttributeError, ValueError) as exc:
                head = orjson.dumps(body)[:200].decode(errors="replace")
                return TransientError(f"malformed result ({type(exc).__name__}): {head!r}")
        error = line.get("error") or {}
        code = error.get("code")
        if code in _NOT_RUN:  # goes out again in a later batch
            return TransientError(f"{code}: {error.get('message') or 'not run'}")
        message = _message(body) or error.get("message") or f"{code}"
        if isinstance(status, int):
            return classify_status(status, message, None, key_env=self._key_env, model=self.model)
        return RequestError(f"{code or 'error'}: {message}")

    @asynccontextmanager
    async def _translated(self, what: str, *, submitting: bool = False) -> AsyncIterator[None]:
        """The SDK's exceptions as the engine's errors."""
        import openai

        try:
            yield
        except openai.APIStatusError as exc:
            if submitting and exc.status_code in (404, 405, 501):
                raise not_served(self._base_url, what, exc.status_code, ROUTES) from exc
            if exc.status_code == 404:  # a batch or file that is gone: its requests go again
                raise TransientError(f"{what}: HTTP 404 ({exc.message})", status=404) from exc
            raise classify_status(
                exc.status_code,
                exc.message,
                parse_retry_after(exc.response.headers),
                key_env=self._key_env,
                model=self.model,
            ) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except (openai.APIResponseValidationError, orjson.JSONDecodeError) as exc:
            raise TransientError(f"{what}: malformed reply ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        await self._client.close()


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message") or "") if isinstance(error, dict) else ""
