"""Answer functions that make the fake servers reply like a model that followed the prompt.

A server sees only messages. ``PromptBook`` lets a test's fake answer every chatumm operation
correctly anyway: wrap the engine in ``book.client(engine)``; each request is remembered
(messages -> operation, variables, seed, attempt) on its way out, and ``book.answer`` (the
fake's answer function) replies with what the ``template`` backend would write for it. The
request still crosses real HTTP, the real client library and the real parser; only the
"model" is scripted. ``caption2query_answer`` needs no book: it reads the caption and the
sentence structures back from the rendered caption2query prompt, so a fake in another process
(``bench/bench_ops.py``) can answer it.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading

from ops.protocol import LLMRequest, LLMResponse
from ops.registry import OPS
from ops.template_backend import answer as template_answer
from tests.fakes._server import FakeRequest

_CAPTION = re.compile(r"caption: <<<(.*?)>>>", re.DOTALL)
_STRUCTURE = re.compile(r"^(English|simplified Chinese): (.+)$", re.MULTILINE)


def _rng(*parts: object) -> random.Random:
    return random.Random(hashlib.sha256(repr(parts).encode()).digest())


class PromptBook:
    def __init__(self) -> None:
        self._requests: dict[tuple[tuple[str, str], ...], LLMRequest] = {}
        self._lock = threading.Lock()  # the fake answers from its own thread

    def remember(self, request: LLMRequest) -> None:
        with self._lock:
            self._requests[tuple((m.role, m.content) for m in request.messages)] = request

    def answer(self, fake: FakeRequest) -> str:
        with self._lock:
            request = self._requests[fake.messages]
        p = request.params
        rng = _rng(request.operation, p.seed, p.attempt)
        return template_answer(OPS[request.operation], request.variables, rng)

    def client(self, backend: _Completer) -> _Remembering:
        return _Remembering(backend, self)


class _Completer:
    async def complete(self, request: LLMRequest) -> LLMResponse: ...


class _Remembering:
    """Passes requests on unchanged, remembering each one first; keeps the backend's name."""

    def __init__(self, backend: object, book: PromptBook):
        self.backend = backend
        self.name = getattr(backend, "name", "")
        self.model = getattr(backend, "model", "")
        self._book = book

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self._book.remember(request)
        return await self.backend.complete(request)  # type: ignore[attr-defined,no-any-return]

    async def aclose(self) -> None:
        await self.backend.aclose()  # type: ignore[attr-defined]


def caption2query_answer(fake: FakeRequest) -> str:
    """Six valid caption2query results read back from the prompt (caption, both structures)."""
    prompt = fake.prompt
    captions = _CAPTION.findall(prompt)
    structures = dict(_STRUCTURE.findall(prompt))
    assert captions and len(structures) == 2, "not a caption2query prompt"
    variables = {
        "caption": captions[-1],  # the first caption in the prompt is the worked example
        "en_structure": structures["English"],
        "zh_structure": structures["simplified Chinese"],
    }
    return template_answer(OPS["caption2query"], variables, _rng(prompt))
