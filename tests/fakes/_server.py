"""What the fake OpenAI and Gemini servers share: a background-thread aiohttp server, a fault
plan, a request log, and the answer function.

The server speaks real HTTP on 127.0.0.1 (a free port), so the real client libraries run
unmodified against it: mocks that patch a transport would not exercise them (openai 3.x and
google-genai use httpx2 or aiohttp, which respx-style mocks do not intercept).

Faults are scripted, so a test knows exactly what the client went through:
``FaultPlan(first=("429", "500", "timeout", "length"))`` answers the first four requests
with those faults, then draws from ``share`` (``{"429": 0.05}``: 5% of the rest) with a
seeded RNG. ``"timeout"`` sleeps ``hang_s`` before answering, past the client's timeout.
With ``keyed=True`` a request's draw comes from a hash of the seed, the request and how many
times that same request came before, not from one stream: two clients that send the same
requests meet the same faults on the same requests, whatever the order they arrive in (the
engine benchmark compares the engine with a bare loop so, rather than by luck of the draw).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import random
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from aiohttp import web

# "badjson", "nochoices", "notutf8": a 200 whose body is not the answer (cut-off JSON, JSON
# without the answer, bytes that are not UTF-8), as proxies and overloaded gateways send.
# "leak400", "leak500": an error whose message quotes the API key the request carried.
# "400": a request the model refuses (too long a context), as in a batch's error file.
Fault = Literal[
    "ok", "429", "500", "timeout", "length",
    "badjson", "nochoices", "notutf8", "leak400", "leak500", "400",
]  # fmt: skip
MALFORMED: tuple[Fault, ...] = ("badjson", "nochoices", "notutf8")


@dataclass(frozen=True)
class FakeRequest:
    """A chat request as either server received it: (role, text) messages, and the raw body."""

    messages: tuple[tuple[str, str], ...]
    body: Mapping[str, object]

    @property
    def prompt(self) -> str:
        return "\n".join(text for _, text in self.messages)


AnswerFn = Callable[[FakeRequest], str]


def echo_answer(request: FakeRequest) -> str:
    """The default answer: stable and derived from the prompt, so it can be checked."""
    last = request.messages[-1][1] if request.messages else ""
    return f"answer to: {last[:200]}"


@dataclass(frozen=True)
class FaultPlan:
    first: Sequence[Fault] = ()
    share: Mapping[Fault, float] = field(default_factory=dict)
    retry_after_s: float | None = 0.05  # sent as Retry-After; None: header omitted
    hang_s: float = 30.0
    seed: int = 0
    keyed: bool = False  # draws from (seed, request, repeat count), not from one stream


@dataclass(frozen=True)
class LoggedRequest:
    t: float  # time.monotonic() on arrival
    path: str
    body: Mapping[str, object]
    headers: Mapping[str, str]
    fault: Fault


def count_tokens(text: str) -> int:
    """The fakes' token count, deterministic so tests can check cost accounting: 4 chars each."""
    return (len(text) + 3) // 4


class FakeServer(ABC):
    """Base: subclasses add routes in ``_routes`` and format answers and errors."""

    def __init__(
        self,
        answer: AnswerFn = echo_answer,
        *,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        log_requests: bool = True,
    ):
        self.answer = answer
        self.latency_s = latency_s
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.log_requests = log_requests
        self.log: list[LoggedRequest] = []
        self.count = 0
        self._rng = random.Random(self.faults.seed)
        self._seen: Counter[bytes] = Counter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # Subclass hooks --------------------------------------------------------------------
    @abstractmethod
    def _routes(self, app: web.Application) -> None:
        """Add the API's routes to ``app``."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Faults --------------------------------------------------------------------------------
    def next_fault(self, request: bytes = b"") -> Fault:
        """The fault for the next request; ``request`` (its canonical bytes) keys the draw."""
        i = self.count
        self.count += 1
        plan = self.faults
        if i < len(plan.first):
            return plan.first[i]
        if plan.share:
            if plan.keyed:
                repeat = self._seen[request]
                self._seen[request] += 1
                digest = hashlib.sha256(f"{plan.seed}:{repeat}:".encode() + request).digest()
                draw = int.from_bytes(digest[:8], "little") / 2**64
            else:
                draw = self._rng.random()
            for fault, share in plan.share.items():
                if draw < share:
                    return fault
                draw -= share
        return "ok"

    def set_faults(self, faults: FaultPlan) -> None:
        """Replace the plan and restart its counter (between two phases of a test)."""
        self.faults = faults
        self.count = 0
        self._rng = random.Random(faults.seed)
        self._seen.clear()

    def record(self, request: web.Request, body: Mapping[str, object], fault: Fault) -> None:
        if self.log_requests:
            self.log.append(
                LoggedRequest(time.monotonic(), request.path, body, dict(request.headers), fault)
            )

    async def delay(self, fault: Fault) -> None:
        if fault == "timeout":
            await asyncio.sleep(self.faults.hang_s)
        elif self.latency_s:
            await asyncio.sleep(self.latency_s)

    def retry_headers(self) -> dict[str, str]:
        ra = self.faults.retry_after_s
        return {} if ra is None else {"Retry-After": f"{ra:g}"}

    # Lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            app = web.Application()
            self._routes(app)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock, backlog=1024).start())
            ready.set()
            loop.run_forever()
            # Hanging handlers ("timeout" faults) are cancelled, not waited for.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_log(self) -> None:
        self.log.clear()
        self.count = 0


S = TypeVar("S", bound=FakeServer)


def serve_from_command_line(
    server_class: type[S], description: str, address: Callable[[S], str]
) -> None:
    """Run a fake in its own process (bench/bench_ops.py does): print its address, serve until
    interrupted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keyed-faults",
        action="store_true",
        help="the same request meets the same faults in every client (see FaultPlan.keyed)",
    )
    parser.add_argument(
        "--answer", default="", help="module:function mapping a FakeRequest to the answer text"
    )
    parser.add_argument(
        "--answer-table", type=Path, help="JSON {sha256(prompt): answer} served before --answer"
    )
    args = parser.parse_args()
    plan = FaultPlan(
        share={"429": args.share_429},
        retry_after_s=args.retry_after,
        seed=args.seed,
        keyed=args.keyed_faults,
    )
    answer: AnswerFn = echo_answer
    if args.answer:
        module, _, function = args.answer.partition(":")
        answer = getattr(importlib.import_module(module), function)
    if args.answer_table:
        from tests.fakes.answers import AnswerTable

        answer = AnswerTable.load(args.answer_table, answer)
    server = server_class(answer, latency_s=args.latency, faults=plan, log_requests=False)
    server.start()
    print(address(server), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
