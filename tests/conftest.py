"""Shared fixtures: fake OpenAI and Gemini servers on 127.0.0.1 (see tests/fakes/), and the
bundled dataset synthesized once per session (``bundled_run``) and a tiny checkpoint trained on
it (``tiny_run_dir``).

By default the fakes answer every chatumm operation validly: each ``OpSpec.render`` in the test
is remembered in ``prompt_book``, and the fake replies as the template backend would for that
request (``tests/fakes/answers.py``). Set ``server.answer`` to script other answers,
``server.set_faults(FaultPlan(...))`` to inject 429s, 500s, timeouts and truncations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bundled import BundledRun, synthesize_bundled
from tests.fakes._server import FakeServer
from tests.fakes.answers import PromptBook, record_renders
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_openai import FakeOpenAI
from tests.train_fixtures import train_tiny_run


@pytest.fixture
def prompt_book(monkeypatch: pytest.MonkeyPatch) -> PromptBook:
    book = PromptBook()
    record_renders(book, monkeypatch)
    return book


@pytest.fixture
def fake_openai(prompt_book: PromptBook) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(prompt_book.answer)
    with server:
        yield server


@pytest.fixture
def fake_gemini(prompt_book: PromptBook) -> Iterator[FakeGemini]:
    server = FakeGemini(prompt_book.answer)
    with server:
        yield server


@pytest.fixture(params=["openai", "gemini"])
def llm_server(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    fake_gemini: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
) -> FakeServer:
    """Each of the two fake LLM servers in turn, with the test key the engine configs name."""
    monkeypatch.setenv("CHATUMM_TEST_KEY", "sk-test")
    return fake_openai if request.param == "openai" else fake_gemini


@pytest.fixture(scope="session")
def bundled_run(tmp_path_factory: pytest.TempPathFactory) -> BundledRun:
    """examples/sources.yaml through stages a, b and c with the template backend (a few seconds)."""
    return synthesize_bundled(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, bundled_run: BundledRun) -> Path:
    """Two steps of the tiny recipe under torchrun on the bundled stage-c shards: a run
    directory to load (inference, the demo)."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"), bundled_run.stage_c)
