"""The engine: any ``Backend`` plus flow control, retries, the response cache and accounting.

``Engine`` is itself a ``Backend``, so operations never know whether they talk to a bare
backend or to the engine. One request goes:

    cache lookup -> [slot (adaptive concurrency) -> RPM/TPM buckets -> backend] x retries
                 -> accounting -> cache write (complete answers only)

Retries (tenacity) cover 429, 5xx, timeouts and dropped connections, honour the server's
Retry-After, and otherwise back off exponentially with full jitter. A retry waits *outside*
its concurrency slot and re-enters at the head of the queue. The first attempt runs outside
tenacity: entering ``AsyncRetrying`` costs ~50 µs, a twentieth of the per-request budget,
and nearly every request succeeds at once. For the same reason tenacity is imported at the
first retry: its import (which pulls in tornado where installed) costs ~0.1 s and ~5 MB.

Answers go back to the operations in batches (``coalesce_s``, 20 ms for the network backends):
an answer waits for the end of the current batch window, then all answers of the window resume
their operations back to back. Handed back one by one as they arrive (~300 a second at
concurrency 64 against a 200 ms server), each answer wakes rendering, parsing, validation and
shard code that the idle time between answers has pushed out of the CPU caches; in batches that
code runs hot. Measured here (bench/bench_ops.py's workload, runs interleaved in the same
minutes): CPU per operation 1.23-1.52 -> 1.00-1.22 ms at concurrency 64 (wall time no longer);
at 256, wall 2.8-3.3 -> 2.4-2.7 s and CPU 1.10-1.40 -> 1.02-1.24 ms. The price is at most 20 ms
more latency per request (1-10% of an LLM call). Cache hits and the template backend do not wait.

A completion cut off by length or a content filter is returned as it is, not retried here and
never cached: the operation counts it as a rejection and asks again with a new ``attempt``
(a new sample, a new cache key). Retries exhausted or a bad request give
``finish_reason="error"`` with the error in ``text``; a configuration error (bad key, unknown
model) raises, since every other request would fail the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from functools import cache
from typing import TYPE_CHECKING, Any

from ops.engine.cache import ResponseCache, request_key
from ops.engine.config import EngineConfig
from ops.engine.errors import RateLimitedError, RequestError, TransientError
from ops.engine.limits import AdaptiveLimiter, Gate, TokenBucket
from ops.engine.stats import EngineStats, Usage
from ops.protocol import Backend, LLMRequest, LLMResponse

if TYPE_CHECKING:
    from tenacity import AsyncRetrying

log = logging.getLogger("ops.engine")

_RETRYABLE = (TransientError, TimeoutError, ConnectionError)


def backoff_seconds(
    exc: BaseException | None, failures: int, *, base: float = 0.5, cap: float = 30.0
) -> float:
    """Wait after the ``failures``-th failure: the server's Retry-After where it sent a positive
    one (+0–10% jitter, so that retries refused together do not return together), else
    full-jitter exponential. The server knows its load better than our guess, and the adaptive
    limiter already slows every request down when 429s pile up; taking the longer of the two
    let a request refused three times wait up to twice what the server asked."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        return float(retry_after) * random.uniform(1.0, 1.1)
    return random.uniform(0.0, min(cap, base * 2 ** (failures - 1)))


@cache
def _wait_retry_after() -> Any:
    """tenacity's wait strategy for ``backoff_seconds`` (a class built at the first retry)."""
    from tenacity import RetryCallState
    from tenacity.wait import wait_base

    class _WaitRetryAfter(wait_base):
        def __call__(self, retry_state: RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            # +1: the first failure happened before tenacity took over.
            return backoff_seconds(exc, retry_state.attempt_number + 1)

    return _WaitRetryAfter


def _retrying(max_retries: int) -> AsyncRetrying:
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    return AsyncRetrying(
        stop=stop_after_attempt(max_retries),
        wait=_wait_retry_after()(),
        retry=retry_if_exception_type(_RETRYABLE),
        reraise=True,
    )


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig):
        self.backend = backend
        self.config = config
        self.name = backend.name
        self.model = backend.model
        self.stats = EngineStats()
        limit = config.concurrency
        backend_limit = getattr(backend, "max_concurrency", None)
        if backend_limit is not None:
            limit = min(limit, backend_limit)
        self.limiter = AdaptiveLimiter(limit)
        # Operations between render and result (``ops.run.run_op``): twice the requests in
        # flight, so the next prompts are rendered while the slots are busy, and operations
        # waiting out a 429's Retry-After (which keep their admission) do not starve the
        # slots: with as many as the slots, 5% of 429s cost 1.23x the bare loop's wall at 64.
        self.admission = Gate(2 * limit)
        self._rpm = TokenBucket(config.rpm) if config.rpm else None
        self._tpm = TokenBucket(config.tpm) if config.tpm else None
        self._cache = ResponseCache(config.cache_dir) if config.cache_dir is not None else None
        self._prices = config.price_table
        if backend.model not in self._prices:
            self.stats.unpriced.add(backend.model)
        self._price_in, self._price_out = self._prices.get(backend.model, (0.0, 0.0))
        self._coalesce_s = config.coalesce_s or 0.0
        self._window: list[asyncio.Future[None]] = []  # answers waiting for the batch to end

    @classmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        from ops.engine import make_backend

        return cls(make_backend(config), config)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        usage = self.stats.usage(request.operation, self.model)
        key = None
        if self._cache is not None:
            key = request_key(self.name, self.model, request)
            hit = self._cache.get(key)
            if hit is not None:
                usage.cache_hits += 1
                return hit
        response = await self._send(request, usage)
        if response.finish_reason != "error":  # an error is counted in _failed, never cached
            self._account(response, usage)
            if key is not None and response.finish_reason == "stop":
                assert self._cache is not None
                self._cache.put(key, response)
        if self._coalesce_s:
            await self._batch_end()
        return response

    def _batch_end(self) -> asyncio.Future[None]:
        """A future of this answer's own that resolves when the current batch window closes
        (one per answer, so that cancelling one operation cancels no other)."""
        loop = asyncio.get_running_loop()
        if not self._window:
            loop.call_later(self._coalesce_s, self._close_window)
        waiter: asyncio.Future[None] = loop.create_future()
        self._window.append(waiter)
        return waiter

    def _close_window(self) -> None:
        window, self._window = self._window, []
        for waiter in window:
            if not waiter.done():  # a cancelled operation's waiter is done already
                waiter.set_result(None)

    async def _send(self, request: LLMRequest, usage: Usage) -> LLMResponse:
        try:
            return await self._attempt(request, usage, retry=False)
        except _RETRYABLE as exc:
            first = exc
        except RequestError as exc:
            return self._failed(request, exc, usage)
        if self.config.max_retries == 0:
            return self._failed(request, first, usage)
        log.debug("retrying %s after %r", request.operation, first)
        await asyncio.sleep(backoff_seconds(first, 1))
        retrying = _retrying(self.config.max_retries)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request, usage, retry=True)
        except (*_RETRYABLE, RequestError) as exc:
            return self._failed(request, exc, usage)
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _attempt(self, request: LLMRequest, usage: Usage, *, retry: bool) -> LLMResponse:
        await self.limiter.acquire(priority=retry)
        estimate = 0.0
        try:
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None:
                estimate = _estimate_tokens(request)
                await self._tpm.take(estimate)
            usage.attempts += 1
            if retry:
                usage.retries += 1
            try:
                response = await self.backend.complete(request)
            except RateLimitedError as exc:
                usage.rate_limited += 1
                self.limiter.on_rate_limited(exc.retry_after)
                raise
            self.limiter.on_success()
            if self._tpm is not None:
                self._tpm.settle(estimate, response.prompt_tokens + response.completion_tokens)
                estimate = 0.0
            return response
        finally:
            if estimate and self._tpm is not None:
                self._tpm.settle(estimate, 0.0)  # refused: those tokens were not spent
            self.limiter.release()

    def _account(self, response: LLMResponse, usage: Usage) -> None:
        usage.requests += 1
        usage.prompt_tokens += response.prompt_tokens
        usage.completion_tokens += response.completion_tokens
        usage.cost_usd += (
            response.prompt_tokens * self._price_in + response.completion_tokens * self._price_out
        ) * 1e-6
        if response.finish_reason in ("length", "content_filter"):
            usage.truncated += 1

    def _failed(self, request: LLMRequest, exc: BaseException, usage: Usage) -> LLMResponse:
        log.warning("%s failed for good: %s", request.operation, exc)
        usage.errors += 1
        return LLMResponse(
            text=f"{type(exc).__name__}: {exc}", finish_reason="error", model=self.model
        )

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self._cache is not None:
            self._cache.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _estimate_tokens(request: LLMRequest) -> float:
    """Tokens a request may use, for the TPM bucket before the server tells: ~4 characters per
    prompt token plus the whole completion budget (what providers reserve against TPM)."""
    return sum(len(m.content) for m in request.messages) / 4 + request.params.max_tokens
