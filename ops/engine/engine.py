"""The engine: any ``Backend`` plus flow control, retries, the response cache and accounting.

``Engine`` is itself a ``Backend``, so operations never know whether they talk to a bare
backend or to the engine. One request goes:

    cache lookup -> [slot (adaptive concurrency) -> RPM/TPM buckets -> backend] x retries
                 -> accounting -> cache write (complete answers only)

Guarantees:
- At most ``max_concurrency`` requests are in flight (the config's ``concurrency``, lowered to
  the backend's own ``max_concurrency`` where it has one); this is the run's one concurrency
  limit. It adapts to 429s (``ops.engine.limits``).
- Retries (tenacity) cover 429, 5xx, timeouts and dropped connections, honour the server's
  Retry-After, and otherwise back off exponentially with full jitter. A retry waits *outside*
  its concurrency slot and re-enters at the head of the queue.
- A completion cut off by length or a content filter is returned as it is, not retried here and
  never cached: the operation counts it as a rejection and asks again with a new ``attempt``
  (a new sample, a new cache key).
- Retries exhausted, a bad request or any other failure of the backend give
  ``finish_reason="error"`` with the error in ``text``; a configuration error (bad key, unknown
  model: ``BackendConfigError``) raises, since every other request would fail the same way.
- No API key leaves the engine: every answer text, error text, log line and raised message
  is passed through ``redact`` with the values of every key variable (``EngineConfig.secrets``).
- Answers from the network go back to the operations in batches (``coalesce_s``, 20 ms): an
  answer waits for the end of the current window, then all answers of the window resume their
  operations back to back. That costs at most 20 ms of latency per request (1-10% of an LLM
  call) and keeps the engine within its wall-time target against a bare client loop; without
  it the target fails (bench/results/bench_ops.md). Cache hits and the template backend do not
  wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from ops.engine.cache import ResponseCache, request_key
from ops.engine.config import EngineConfig
from ops.engine.errors import (
    BackendConfigError,
    RateLimitedError,
    TransientError,
    redact,
)
from ops.engine.limits import AdaptiveLimiter, TokenBucket
from ops.engine.stats import EngineStats, Usage
from ops.protocol import Backend, LLMRequest, LLMResponse

log = logging.getLogger("ops.engine")

_RETRYABLE = (TransientError, TimeoutError, ConnectionError)


def backoff_seconds(
    exc: BaseException | None, failures: int, *, base: float = 0.5, cap: float = 30.0
) -> float:
    """Wait after the ``failures``-th failure: the server's Retry-After where it sent a positive
    one (+0–10% jitter, so that retries refused together do not return together), else
    full-jitter exponential. The server knows its load better than our guess, and the adaptive
    limiter already slows every request down when 429s pile up."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        return float(retry_after) * random.uniform(1.0, 1.1)
    return random.uniform(0.0, min(cap, base * 2 ** (failures - 1)))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return backoff_seconds(exc, state.attempt_number)


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig):
        self.backend = backend
        self.config = config
        self.name = backend.name
        self.model = backend.model
        self.stats = EngineStats()
        limit = config.concurrency
        if backend.max_concurrency is not None:
            limit = min(limit, backend.max_concurrency)
        self.max_concurrency: int = limit
        self.limiter = AdaptiveLimiter(limit)
        self._rpm = TokenBucket(config.rpm) if config.rpm else None
        self._tpm = TokenBucket(config.tpm) if config.tpm else None
        self._cache = ResponseCache(config.cache_dir) if config.cache_dir is not None else None
        self._prices = config.price_table
        if backend.model not in self._prices:
            self.stats.unpriced.add(backend.model)
        self._price_in, self._price_out = self._prices.get(backend.model, (0.0, 0.0))
        self._secrets = config.secrets()
        self._coalesce_s = config.coalesce_s or 0.0
        self._window: list[asyncio.Future[None]] = []  # answers waiting for the batch to end

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
        if self._secrets and redact(response.text, self._secrets) != response.text:
            response = replace(response, text=redact(response.text, self._secrets))
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
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_wait,
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    retry = attempt.retry_state.attempt_number > 1
                    return await self._attempt(request, usage, retry=retry)
        except BackendConfigError as exc:
            message = redact(str(exc), self._secrets)
        except Exception as exc:  # retries exhausted, a bad request, a fault of the backend's
            return self._failed(request, exc, usage)
        else:
            raise AssertionError("unreachable: tenacity either returns or reraises")
        # Raised here, not in the handler: the original (the key quoted) is not its context.
        raise BackendConfigError(message)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.debug("retry %d after %s", state.attempt_number, redact(repr(exc), self._secrets))

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
                spent = response.prompt_tokens + response.completion_tokens
                self._tpm.settle(estimate, spent + response.thinking_tokens)
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
        usage.thinking_tokens += response.thinking_tokens
        output = response.completion_tokens + response.thinking_tokens  # thinking bills as output
        usage.cost_usd += (
            response.prompt_tokens * self._price_in + output * self._price_out
        ) * 1e-6
        if response.finish_reason in ("length", "content_filter"):
            usage.truncated += 1

    def _failed(self, request: LLMRequest, exc: BaseException, usage: Usage) -> LLMResponse:
        text = redact(f"{type(exc).__name__}: {exc}", self._secrets)
        log.warning("%s failed for good: %s", request.operation, text)
        usage.errors += 1
        return LLMResponse(text=text, finish_reason="error", model=self.model)

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
