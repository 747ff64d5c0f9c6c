"""Flow control: an adaptive concurrency limiter and token buckets for RPM/TPM limits.

``AdaptiveLimiter`` bounds requests in flight. Its limit follows AIMD, like TCP congestion
control: when 429s become a sizeable share of recent answers, the limit halves and new requests
pause for the server's Retry-After, so retries do not cause more 429s; each success adds
``1/limit``, so the limit climbs back by about one per round trip. A sporadic 429 (a few per
hundred answers) does not trigger it: that request alone waits and retries. Reacting to every
429 would collapse throughput against a server whose 429s are noise, not load.

The fast path (a free slot, no pause) is a comparison and an increment: no await, no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable


async def _handed_over(
    fut: asyncio.Future[None], waiters: deque[asyncio.Future[None]], release: Callable[[], None]
) -> None:
    """Wait until a slot is handed over through ``fut``. Cancelled meanwhile: leave ``waiters``,
    or give the slot back if it was handed over just as the cancellation came."""
    try:
        await fut
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled():
            release()
        else:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
        raise


class AdaptiveLimiter:
    def __init__(
        self,
        max_limit: int,
        *,
        window: int | None = None,
        overload_share: float = 0.2,
        min_samples: int = 10,
    ):
        assert max_limit >= 1
        self.max_limit = max_limit
        self.limit = float(max_limit)
        self.in_flight = 0
        self.decreases = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = 0.0
        self._pause_task: asyncio.TimerHandle | None = None
        # The last `window` outcomes (True = 429) and how many of them are 429s.
        self._outcomes: deque[bool] = deque(maxlen=window or max(32, max_limit))
        self._limited = 0
        self._overload_share = overload_share
        self._min_samples = min_samples
        self._last_decrease = 0.0

    async def acquire(self, *, priority: bool = False) -> None:
        """Take a slot; ``priority`` (a retry) queues ahead of first attempts."""
        if not self._waiters and self.in_flight < self.limit and not self._paused_until:
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if priority:
            self._waiters.appendleft(fut)
        else:
            self._waiters.append(fut)
        self._wake()
        await _handed_over(fut, self._waiters, self.release)

    def release(self) -> None:
        self.in_flight -= 1
        assert self.in_flight >= 0
        if self._waiters:
            self._wake()

    def on_success(self) -> None:
        self._record(False)
        if self.limit < self.max_limit:
            self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)

    def on_rate_limited(self, retry_after: float | None) -> None:
        self._record(True)
        now = time.monotonic()
        seen = len(self._outcomes)
        if seen < self._min_samples or self._limited < self._overload_share * seen:
            return
        pause = retry_after if retry_after is not None else 1.0
        if now - self._last_decrease < max(pause, 0.5):
            return  # one decrease per round of evidence
        self._last_decrease = now
        self.decreases += 1
        self.limit = max(1.0, self.limit / 2)
        self._outcomes.clear()
        self._limited = 0
        self._paused_until = max(self._paused_until, now + pause)
        if self._pause_task is not None:
            self._pause_task.cancel()
        self._pause_task = asyncio.get_running_loop().call_later(pause, self._end_pause)

    def _end_pause(self) -> None:
        self._paused_until = 0.0
        self._pause_task = None
        self._wake()

    def _record(self, limited: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._limited -= 1
        self._outcomes.append(limited)
        self._limited += limited

    def _wake(self) -> None:
        if self._paused_until:
            return  # paused: the pause timer wakes the queue
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)


class TokenBucket:
    """``per_minute`` units refilled continuously; holds at most ``burst_s`` seconds' worth.

    ``take(n)`` waits, first come first served, until the bucket holds ``n`` (or is full, for a
    request larger than the bucket, which then runs it into debt). ``settle(estimate, actual)``
    corrects an estimate once the real count is known (TPM: prompt + completion tokens).
    """

    def __init__(self, per_minute: float, *, burst_s: float = 1.0):
        assert per_minute > 0
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: float) -> None:
        async with self._lock:
            self._refill()
            need = min(n, self.capacity)
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= n

    def settle(self, estimate: float, actual: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + estimate - actual)
