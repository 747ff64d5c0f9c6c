"""The engine hands answers back in batches: one window's answers resume their callers together."""

from __future__ import annotations

import asyncio

import pytest

from ops.engine import Engine, EngineConfig
from ops.protocol import GenerationParams, LLMRequest, LLMResponse, Message


class DelayedBackend:
    """Answers request ``i`` after ``delays[i]`` seconds (a backend of the ops.protocol kind)."""

    name = "openai"
    model = "gpt-4o-mini"
    max_concurrency = None

    def __init__(self, delays: list[float]):
        self.delays = delays

    async def complete(self, request: LLMRequest) -> LLMResponse:
        await asyncio.sleep(self.delays[request.params.seed])
        return LLMResponse(f"answer {request.params.seed}", "stop", self.model, 10, 5)

    async def aclose(self) -> None:
        return None


def _request(i: int) -> LLMRequest:
    return LLMRequest("caption2query", (Message("user", f"item {i}"),), GenerationParams(seed=i))


async def _return_times(engine: Engine, n: int) -> list[float]:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> float:
        response = await engine.complete(_request(i))
        assert response.text == f"answer {i}"
        return loop.time()

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_answers_of_one_window_go_back_together() -> None:
    async def run() -> None:
        delays = [0.0, 0.01, 0.02, 0.03, 0.25]  # four answers in the first window, one later
        config = EngineConfig(backend="openai", base_url="http://127.0.0.1:9", coalesce_s=0.1)
        async with Engine(DelayedBackend(delays), config) as engine:
            start = asyncio.get_running_loop().time()
            times = await _return_times(engine, len(delays))
        first, last = times[:4], times[4]
        assert max(first) - min(first) < 0.05  # handed back together, not 10 ms apart
        assert min(first) - start >= 0.09  # at the end of the window the first answer opened
        assert last - start >= 0.25 + 0.09  # a later answer opens a window of its own

    asyncio.run(run())


def _delivered_in_order(coalesce_s: float) -> list[bool]:
    """For answers 1 and 2: was the previous answer already in its caller's hands a few event
    loop turns after the backend produced it? Counted in loop turns, not seconds, so a loaded
    machine cannot change the result."""

    class ChainedBackend(DelayedBackend):
        def __init__(self, n: int):
            super().__init__([0.0] * n)
            self.answered = [asyncio.Event() for _ in range(n)]
            self.delivered = [asyncio.Event() for _ in range(n)]
            self.seen: list[bool] = []

        async def complete(self, request: LLMRequest) -> LLMResponse:
            i = request.params.seed
            if i > 0:
                await self.answered[i - 1].wait()
                for _ in range(20):
                    await asyncio.sleep(0)
                self.seen.append(self.delivered[i - 1].is_set())
            response = await super().complete(request)
            self.answered[i].set()
            return response

    async def run() -> list[bool]:
        backend = ChainedBackend(3)
        config = EngineConfig(
            backend="openai", base_url="http://127.0.0.1:9", coalesce_s=coalesce_s
        )
        async with Engine(backend, config) as engine:

            async def one(i: int) -> str:
                response = await engine.complete(_request(i))
                backend.delivered[i].set()
                return response.text

            texts = await asyncio.gather(*(one(i) for i in range(3)))
        assert texts == [f"answer {i}" for i in range(3)]
        return backend.seen

    return asyncio.run(run())


def test_without_coalescing_answers_go_back_as_they_arrive() -> None:
    assert _delivered_in_order(0) == [True, True]
    assert _delivered_in_order(0.1) == [False, False]  # a window holds them back


def test_cancelling_one_waiting_operation_cancels_no_other() -> None:
    async def run() -> None:
        config = EngineConfig(backend="openai", base_url="http://127.0.0.1:9", coalesce_s=0.1)
        async with Engine(DelayedBackend([0.0, 0.0, 0.0]), config) as engine:
            tasks = [asyncio.create_task(engine.complete(_request(i))) for i in range(3)]
            await asyncio.sleep(0.03)  # all three answered, all waiting for the window to close
            tasks[1].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert [r.text for r in (done[0], done[2])] == ["answer 0", "answer 2"]

    asyncio.run(run())


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("template", 0.0), ("openai", 0.02), ("gemini", 0.02), ("local", 0.02)],
)
def test_network_backends_coalesce_by_default_and_the_template_backend_does_not(
    backend: str, expected: float
) -> None:
    assert EngineConfig.model_validate({"backend": backend}).coalesce_s == expected
