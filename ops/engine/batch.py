"""Batch mode: a provider's batch API behind the ``Backend`` protocol, at half the price.

``BatchBackend.complete(request)`` does not call the model: it adds the request to the batch
being gathered and returns when that batch's answers are back. A gathered batch goes out when
it holds ``batch_max_requests`` requests, when the next one would take it past
``batch_max_bytes``, or ``batch_window_s`` after its first request arrived; each batch out there
is asked after every ``batch_poll_s``, the wait growing 1.5x per ask to ``batch_poll_max_s``.
When a batch ends, every request waiting on it resumes at once. So a stage runs unchanged: an
operation that needs a first answer to ask its second asks it when the first batch is back,
and that request goes into a later batch. The engine wraps this backend as any other: the
response cache, retries (a request's transient error goes into a later batch; so do the
unfinished requests of a batch that expired or was cancelled), parsing and validation in the
operations, rejects, and accounting at batch prices (``EngineConfig.price_table``).

Resume (``ops.engine.batch_store``): a batch's request keys are committed under a label of ours
before it is submitted, the provider's id as soon as it is known, and its answers before any
waiting operation resumes. A killed run, rerun with the same command, asks the same requests
again (same seeds, same prompts): one whose batch is still out waits for that batch, one whose
batch came back gets the stored answer, and nothing is submitted twice. A submission cut off
between the two commits is looked for by its label (the batch's metadata or display name)
before its requests go out again. Only batches whose requests a rerun asks for are followed,
so ranks sharing a cache directory do not poll each other's batches.

A provider (``BatchAPI``: ``ops.engine.openai_batch``, ``ops.engine.gemini_batch``) raises only
the engine's errors: ``TransientError`` (asked again with back-off), ``RequestError``,
``BackendConfigError`` (every waiting request fails with it, and the run stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from ops.engine.batch_store import BatchStore
from ops.engine.cache import request_key
from ops.engine.config import EngineConfig
from ops.engine.engine import backoff_seconds
from ops.engine.errors import (
    BackendConfigError,
    RateLimitedError,
    RequestError,
    TransientError,
    redact,
)
from ops.engine.stats import BatchStats
from ops.protocol import LLMRequest, LLMResponse

log = logging.getLogger("ops.engine.batch")

POLL_GROWTH = 1.5
Outcome = LLMResponse | Exception
T = TypeVar("T")


@dataclass(frozen=True)
class BatchStatus:
    """A batch as its provider reports it. ``ended``: no request of it will run any more; the
    results of those that ran are in ``files``. A request without a result gets ``missing``: a
    ``TransientError`` when the batch expired or was cancelled (the request goes out again in a
    later batch), a ``RequestError`` when the provider refused the batch (a reject, with the
    provider's reason); None for a batch that completed."""

    ended: bool
    status: str  # the provider's word for it, for logs and messages
    files: tuple[str, ...] = ()
    missing: Exception | None = None


class BatchAPI(Protocol):
    """One provider's batch interface. ``custom_id`` ties a result to its request."""

    name: str
    model: str
    # The most requests and bytes one batch may hold (the provider's limits).
    limits: tuple[int, int]

    def line(self, custom_id: str, request: LLMRequest) -> bytes:
        """The request as one line of the batch's JSONL input."""
        ...

    async def submit(self, label: str, body: bytes) -> str:
        """Upload ``body`` (JSONL) and create a batch labelled ``label``; its provider id."""
        ...

    async def find(self, label: str, since: float) -> str | None:
        """The id of a batch created with ``label`` (not before ``since``, a time.time()),
        or None if there is none."""
        ...

    async def poll(self, batch_id: str) -> BatchStatus: ...

    async def results(self, status: BatchStatus) -> dict[str, Outcome]:
        """The outcome of every request that ran, by custom id: its answer, or the error
        (``ops.engine.errors``) the provider gave it."""
        ...

    async def aclose(self) -> None: ...


def not_served(base_url: str, what: str, status: int, routes: str) -> BackendConfigError:
    """The error for a server that does not implement the batch routes."""
    return BackendConfigError(
        f"{base_url} does not serve a batch API ({what} answered HTTP {status}); run without "
        f"--batch, or point --base-url at a server that implements {routes}"
    )


@dataclass
class _Waiting:
    """A request some operation waits for; ``label``: the batch carrying it (None: gathered
    for the next one)."""

    line: bytes
    futures: list[asyncio.Future[LLMResponse]] = field(default_factory=list)
    label: str | None = None


@dataclass
class _Gathering:
    keys: list[bytes] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class BatchBackend:
    max_concurrency: int | None = None

    def __init__(self, api: BatchAPI, config: EngineConfig):
        if config.cache_dir is None:
            raise ValueError(
                "batch mode records its batches beside the response cache: set cache_dir"
            )
        most_requests, most_bytes = api.limits
        if config.batch_max_requests > most_requests or config.batch_max_bytes > most_bytes:
            raise ValueError(
                f"a {api.name} batch holds at most {most_requests:,} requests and "
                f"{most_bytes:,} bytes; batch_max_requests {config.batch_max_requests:,} and "
                f"batch_max_bytes {config.batch_max_bytes:,} must fit"
            )
        self.api = api
        self.name, self.model = api.name, api.model
        self.stats = BatchStats()
        self._config = config
        self._secrets = config.secrets()
        self._store = BatchStore(config.cache_dir)
        self._waiting: dict[bytes, _Waiting] = {}
        self._gathering = _Gathering()
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by label: submits or follows a batch

    async def complete(self, request: LLMRequest) -> LLMResponse:
        key = request_key(self.name, self.model, request)
        waiting = self._waiting.get(key)
        new = waiting is None
        if waiting is None:
            answer = self._store.answer(key)
            if answer is not None:  # its batch came back in an earlier run
                return answer
            waiting = self._waiting[key] = _Waiting(self.api.line(key.hex(), request))
        future: asyncio.Future[LLMResponse] = asyncio.get_running_loop().create_future()
        waiting.futures.append(future)  # before gathering, which may resolve it at once
        if new:
            label = self._store.batch_of(key)
            if label is None:
                self._gather(key, waiting)
            else:  # submitted by an earlier run, still out: wait for it
                waiting.label = label
                if label not in self._tasks:
                    self._start(label, self._resume(label))
            self._count()
        try:
            return await future
        finally:
            with contextlib.suppress(ValueError):
                waiting.futures.remove(future)

    # Gathering ------------------------------------------------------------------------------
    def _gather(self, key: bytes, waiting: _Waiting) -> None:
        size = len(waiting.line) + 1
        if self._gathering.keys and self._gathering.size + size > self._config.batch_max_bytes:
            self._send()
        gathering = self._gathering
        gathering.keys.append(key)
        gathering.size += size
        if len(gathering.keys) >= self._config.batch_max_requests:
            self._send()
        elif gathering.timer is None:
            loop = asyncio.get_running_loop()
            gathering.timer = loop.call_later(self._config.batch_window_s, self._send)

    def _send(self) -> None:
        """Submit what was gathered, its keys on disk first."""
        gathering, self._gathering = self._gathering, _Gathering()
        if gathering.timer is not None:
            gathering.timer.cancel()
        if not gathering.keys:
            return
        label = f"chatumm-{uuid.uuid4().hex}"
        keys = tuple(gathering.keys)
        lines = []
        for key in keys:
            waiting = self._waiting[key]
            waiting.label = label
            lines.append(waiting.line)
        try:
            self._store.begin(label, self.name, self.model, keys)
        except sqlite3.Error as exc:  # not recorded (a full disk?): not sent either
            for key in keys:
                self._resolve(key, label, exc)
            return
        self._start(label, self._submit(label, keys, b"\n".join(lines) + b"\n"))

    # One task per batch ---------------------------------------------------------------------
    def _start(self, label: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks[label] = asyncio.get_running_loop().create_task(self._guarded(label, work))
        self._count()

    async def _guarded(self, label: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, retries exhausted, a configuration error
            if not isinstance(exc, BackendConfigError):  # that one stops the run, and says so
                self._warn(f"batch {label} gave up", exc)
            for key, waiting in list(self._waiting.items()):
                if waiting.label == label:
                    self._resolve(key, label, exc)
        finally:
            self._tasks.pop(label, None)
            self._count()

    async def _submit(self, label: str, keys: tuple[bytes, ...], body: bytes) -> None:
        since = time.time()
        tries = failures = 0
        while True:
            try:
                batch_id = await self.api.submit(label, body)
                break
            except (RequestError, BackendConfigError):
                self._store.abandon(label)  # refused: no batch was created
                raise
            except TransientError as exc:
                tries += 1
                # A 429 (too many batches or tokens queued) is waited out, however long.
                failures += not isinstance(exc, RateLimitedError)
                self._warn(f"submitting batch {label} failed", exc)
                # The provider may have created it before the error reached us: never twice.
                found = await self._retrying(lambda: self.api.find(label, since))
                if found is not None:
                    batch_id = found
                    break
                if failures > self._config.max_retries:
                    raise
                await asyncio.sleep(self._backoff(exc, tries))
        self._store.submitted(label, batch_id)
        self.stats.submitted += 1
        log.info("batch %s (%s): %d requests, %d bytes", batch_id, label, len(keys), len(body))
        await self._watch(label, batch_id, keys)

    async def _resume(self, label: str) -> None:
        record = self._store.record(label)
        batch_id = record.remote_id
        if batch_id is None:  # the run that submitted it was killed before the provider answered
            batch_id = await self._retrying(lambda: self.api.find(label, record.created))
            if batch_id is None:
                log.info("batch %s never reached %s: its requests go out again", label, self.name)
                self._store.abandon(label)
                for key in record.keys:
                    waiting = self._waiting.get(key)
                    if waiting is not None and waiting.label == label:
                        waiting.label = None
                        self._gather(key, waiting)
                return
            self._store.submitted(label, batch_id)
        self.stats.resumed += 1
        log.info("batch %s (%s) of an earlier run: following it", batch_id, label)
        await self._watch(label, batch_id, record.keys)

    async def _watch(self, label: str, batch_id: str, keys: tuple[bytes, ...]) -> None:
        delay = self._config.batch_poll_s
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * POLL_GROWTH, max(self._config.batch_poll_max_s, delay))
            try:
                status = await self.api.poll(batch_id)
            except TransientError as exc:
                self._warn(f"asking after batch {batch_id} failed", exc)
                continue
            if status.ended:
                break
        outcomes = await self._retrying(lambda: self.api.results(status))
        answers: dict[bytes, LLMResponse] = {}
        for key in keys:
            outcome = outcomes.get(key.hex())
            if isinstance(outcome, LLMResponse):
                # Stored as the engine would cache it: no key an answer echoes reaches a file.
                text = redact(outcome.text, self._secrets)
                answers[key] = outcome if text == outcome.text else replace(outcome, text=text)
                outcomes[key.hex()] = answers[key]
        self._store.finish(label, answers)  # before anyone resumes: a kill now loses nothing
        if status.missing is None:
            self.stats.done += 1
        else:
            self.stats.ended_early += 1
        log.info(
            "batch %s %s: %d answers, %d errors, %d not run",
            batch_id, status.status, len(answers), len(outcomes) - len(answers),
            len(keys) - len(outcomes),
        )  # fmt: skip
        missing = status.missing or TransientError(
            f"batch {batch_id} ({status.status}) returned no result for this request"
        )
        for key in keys:
            self._resolve(key, label, outcomes.get(key.hex(), missing))

    # Helpers --------------------------------------------------------------------------------
    def _resolve(self, key: bytes, label: str, outcome: Outcome) -> None:
        waiting = self._waiting.get(key)
        if waiting is None or waiting.label != label:
            return
        del self._waiting[key]
        for future in waiting.futures:
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._count()

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, asked again after a transient error, ``max_retries`` times."""
        failures = 0
        while True:
            try:
                return await call()
            except TransientError as exc:
                failures += 1
                if failures > self._config.max_retries:
                    raise
                self._warn(f"{self.name} batch API (try {failures})", exc)
                await asyncio.sleep(self._backoff(exc, failures))

    def _backoff(self, exc: BaseException, failures: int) -> float:
        return backoff_seconds(
            exc, failures, base=self._config.batch_poll_s, cap=self._config.batch_poll_max_s
        )

    def _warn(self, what: str, exc: BaseException) -> None:
        log.warning("%s: %s", what, redact(f"{type(exc).__name__}: {exc}", self._secrets))

    def _count(self) -> None:
        self.stats.waiting = len(self._waiting)
        self.stats.collecting = len(self._gathering.keys)
        self.stats.in_progress = len(self._tasks)

    async def aclose(self) -> None:
        """Stop following batches (they stay recorded for the next run); nothing gathered and
        not yet submitted is sent."""
        if self._gathering.timer is not None:
            self._gathering.timer.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.aclose()
        self._store.close()
