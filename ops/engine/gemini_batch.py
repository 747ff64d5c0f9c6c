"""The Gemini API's batch mode, for ``BatchBackend``, through google-genai (``client.aio``).

A batch is a JSONL file, one ``{"key": custom_id, "request": GenerateContentRequest}`` a line,
uploaded with the Files API (``files.upload``, resumable), then ``batches.create(model,
src="files/...", display_name=label)``. ``batches.get`` reports ``JOB_STATE_*`` (the REST
``BATCH_STATE_*``): PENDING, RUNNING (and QUEUED, UPDATING, PAUSED, CANCELLING) until
SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED or EXPIRED; the results are a JSONL file
(``dest.file_name``, read with ``files.download``), one ``{"key", "response"}`` or ``{"key",
"error"}`` (a google.rpc.Status) a line. An expired batch (pending or running past 48 hours)
returns no results: all its requests go out again. Sources: ai.google.dev/gemini-api/docs/
batch-mode, and google-genai's ``batches.py``/``files.py``.

The request body is the online path's (``gemini_backend.request_body``: system instruction,
contents, generation config with the thinking budget), and so is the reading of an answer and
of an error, so a batch answer equals the online one. The Gemini API only: Vertex AI's batch
prediction reads Cloud Storage or BigQuery (``check_batch`` refuses ``--vertex``).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from ops.engine.batch import BatchStatus, Outcome, not_served
from ops.engine.config import EngineConfig
from ops.engine.errors import RequestError, TransientError
from ops.engine.gemini_backend import (
    GEMINI_URL,
    google_error,
    parse_answer,
    request_body,
    sdk_client,
    thinking_budget,
)
from ops.engine.transport import json_bytes
from ops.protocol import LLMRequest

# No request count per batch is documented; the input file may hold up to 2 GB.
LIMITS = (2**31 - 1, 2_000_000_000)
FILE_TIMEOUT_S = 600.0
ROUTES = "the Files API (upload/v1beta/files) and models/*:batchGenerateContent"
_ENDED = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_FAILED",
     "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)  # fmt: skip


class GeminiBatchAPI:
    name = "gemini"
    limits = LIMITS

    def __init__(self, config: EngineConfig):
        self.model = config.model
        self.budget = thinking_budget(config.model, config.thinking_budget)
        self._config = config
        self._key_env = config.key_source()
        self._api_key = config.api_key(required=True)
        self._base_url = (config.base_url or GEMINI_URL).rstrip("/")
        self._client: Any = None
        self._session: Any = None

    def line(self, custom_id: str, request: LLMRequest) -> bytes:
        body = request_body(request, self.budget, self.model)
        return json_bytes({"key": custom_id, "request": body})

    def _sdk(self) -> Any:
        if self._client is None:  # inside the running loop
            timeout = max(self._config.timeout_s, FILE_TIMEOUT_S)
            self._client, self._session = sdk_client(self._config, self._api_key, timeout_s=timeout)
        return self._client

    async def submit(self, label: str, body: bytes) -> str:
        from google.genai import types

        client = self._sdk()
        async with self._translated("upload of the batch file", submitting=True):
            file = await client.aio.files.upload(
                file=io.BytesIO(body),
                config=types.UploadFileConfig(display_name=label, mime_type="jsonl"),
            )
        async with self._translated("batchGenerateContent"):
            job = await client.aio.batches.create(
                model=self.model,
                src=file.name,
                config=types.CreateBatchJobConfig(display_name=label),
            )
        return str(job.name)

    async def find(self, label: str, since: float) -> str | None:
        from google.genai import types

        async with self._translated("batches.list"):
            pager = await self._sdk().aio.batches.list(
                config=types.ListBatchJobsConfig(page_size=100)
            )
            async for job in pager:
                if job.display_name == label:
                    return str(job.name)
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        try:
            async with self._translated(f"batches.get {batch_id}", lookup=True):
                job = await self._sdk().aio.batches.get(name=batch_id)
        except TransientError as exc:
            if exc.status != 404:
                raise
            gone = TransientError(f"batch {batch_id} is gone from the server")
            return BatchStatus(True, "not found", (), gone)
        state = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
        if state not in _ENDED:
            return BatchStatus(False, state)
        files = (job.dest.file_name,) if job.dest is not None and job.dest.file_name else ()
        missing: Exception | None = None
        if state == "JOB_STATE_FAILED":
            reason = job.error.message if job.error is not None else None
            missing = RequestError(
                f"Gemini refused batch {batch_id}: {reason or 'no reason given'}"
            )
        elif state in ("JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"):
            missing = TransientError(f"batch {batch_id} {state} before this request ran")
        return BatchStatus(True, state, files, missing)

    async def results(self, status: BatchStatus) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for name in status.files:
            try:
                async with self._translated(f"download of {name}", lookup=True):
                    data = await self._sdk().aio.files.download(file=name)
            except TransientError as exc:
                if exc.status != 404:
                    raise
                continue  # a file that is gone: its requests count as not run
            for raw in data.splitlines():
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                if isinstance(line, dict) and isinstance(line.get("key"), str):
                    outcomes[line["key"]] = self._outcome(line)
        return outcomes

    def _outcome(self, line: dict[str, Any]) -> Outcome:
        error = line.get("error") or line.get("status")
        if error is None:
            try:
                return parse_answer(line.get("response"), self.model)
            except (LookupError, TypeError, AttributeError, ValueError) as exc:
                head = orjson.dumps(line.get("response"))[:200].decode(errors="replace")
                return TransientError(f"malformed result ({type(exc).__name__}): {head!r}")
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int):
            return RequestError(f"Gemini refused the request: {error}")
        return google_error(code, error, None, key_env=self._key_env, model=self.model)

    @asynccontextmanager
    async def _translated(
        self, what: str, *, submitting: bool = False, lookup: bool = False
    ) -> AsyncIterator[None]:
        """google-genai's exceptions as the engine's errors. A 404 is the server lacking the
        route when ``submitting``, a batch or file that is gone on a ``lookup`` (a transient
        error with status 404), else an unknown model."""
        import aiohttp
        from google.genai import errors

        try:
            yield
        except errors.APIError as exc:
            if submitting and exc.code in (404, 405, 501):
                raise not_served(self._base_url, what, exc.code, ROUTES) from exc
            if lookup and exc.code == 404:
                raise TransientError(f"{what}: HTTP 404 ({exc.message})", status=404) from exc
            raise google_error(
                exc.code, exc.details, getattr(exc.response, "headers", None),
                key_env=self._key_env, model=self.model,
            ) from exc  # fmt: skip
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError) as exc:  # a reply that is not what the SDK expects
            raise TransientError(f"{what}: malformed reply ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
        if self._session is not None:
            await self._session.close()
