"""Answer functions that make the fake servers reply like a model that followed the prompt.

A server sees only messages. ``PromptBook`` lets a fake answer every chatumm operation correctly
anyway: ``record_renders(book, monkeypatch)`` (what the ``fake_openai`` and ``fake_gemini``
fixtures do) makes every render in the test remember its request (messages ->
operation, variables, seed), and ``book.answer``, the fakes' default answer function, replies
with what the ``template`` backend would write for it; a prompt no operation rendered gets
``echo_answer``. The request still crosses real HTTP, the real client library and the real
parser and validators; only the "model" is scripted. ``caption2query_answer`` needs no book: it
reads the caption and the sentence structures back from the rendered caption2query prompt, so
a fake in another process (``bench/bench_ops.py``) can answer it; ``AnswerTable`` serves answers
computed ahead of time by that same function, so that the benchmark's server spends its CPU on
HTTP, not on answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.protocol import LLMRequest
from ops.registry import OPS, OpSpec
from ops.template_backend import answer as template_answer
from tests.fakes._server import FakeRequest, echo_answer

if TYPE_CHECKING:  # the benchmark's checker imports this module; pytest costs it ~0.12 s
    import pytest

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

    def request_for(self, fake: FakeRequest) -> LLMRequest | None:
        """The request rendered in this test whose messages the fake server received."""
        with self._lock:
            return self._requests.get(fake.messages)

    def answer(self, fake: FakeRequest) -> str:
        request = self.request_for(fake)
        if request is None:
            return echo_answer(fake)
        p = request.params
        rng = _rng(request.operation, p.seed, p.attempt)
        return template_answer(OPS[request.operation], request.variables, rng)


def record_renders(book: PromptBook, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every render in this test remember its request in ``book`` (``OpSpec.render`` and
    ``run_op`` both go through ``OpSpec.render``)."""
    render = OpSpec.render

    def remembering(self: OpSpec, *args: Any, **kwargs: Any) -> LLMRequest:
        request = render(self, *args, **kwargs)
        book.remember(request)
        return request

    monkeypatch.setattr(OpSpec, "render", remembering)


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


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class AnswerTable:
    """Answers looked up by prompt digest; a prompt not in the table goes to ``fallback``."""

    def __init__(self, table: dict[str, str], fallback: Callable[[FakeRequest], str]):
        self.table = table
        self.fallback = fallback

    @classmethod
    def build(cls, prompts: Iterable[str], answer: Callable[[FakeRequest], str]) -> dict[str, str]:
        return {prompt_digest(p): answer(FakeRequest((("user", p),), {})) for p in prompts}

    @classmethod
    def load(cls, path: Path, fallback: Callable[[FakeRequest], str]) -> AnswerTable:
        return cls(json.loads(path.read_text()), fallback)

    def __call__(self, request: FakeRequest) -> str:
        found = self.table.get(prompt_digest(request.prompt))
        return found if found is not None else self.fallback(request)
