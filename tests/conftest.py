"""Shared fixtures: fake OpenAI and Gemini servers on 127.0.0.1 (see tests/fakes/), and the
bundled dataset synthesized once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bundled import BundledRun, synthesize_bundled
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI server; set ``.answer``, ``.faults`` (or ``set_faults``), ``.latency_s``."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture(scope="session")
def bundled_run(tmp_path_factory: pytest.TempPathFactory) -> BundledRun:
    """examples/sources.yaml through stages a, b and c with the template backend (a few seconds)."""
    return synthesize_bundled(tmp_path_factory.mktemp("bundled"))
