"""The response cache: keys, concurrent writers in two processes, nothing secret stored."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ops.engine.cache import ResponseCache, request_key
from ops.protocol import GenerationParams, LLMRequest, LLMResponse, Message

ROOT = Path(__file__).resolve().parents[1]


def _request(text: str = "hello", **params: object) -> LLMRequest:
    return LLMRequest("op", (Message("user", text),), GenerationParams(**params))  # type: ignore[arg-type]


def test_key_covers_what_is_sent_and_nothing_else() -> None:
    base = request_key("openai", "m", _request())
    assert base == request_key("openai", "m", _request())
    # Variables are never sent, so they are not part of the key.
    assert base == request_key(
        "openai", "m", LLMRequest("op", (Message("user", "hello"),), variables={"x": 1})
    )
    different = [
        request_key("gemini", "m", _request()),
        request_key("openai", "m2", _request()),
        request_key("openai", "m", _request("hello!")),
        request_key("openai", "m", _request(attempt=1)),
        request_key("openai", "m", _request(seed=1)),
        request_key("openai", "m", _request(temperature=0.5)),
        request_key("openai", "m", _request(max_tokens=10)),
        request_key("openai", "m", LLMRequest("op", (Message("system", "hello"),))),
    ]
    assert len({base, *different}) == len(different) + 1


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    response = LLMResponse("text ✓ 中文", "stop", "m", 12, 34)
    cache = ResponseCache(tmp_path)
    key = request_key("openai", "m", _request())
    assert cache.get(key) is None
    cache.put(key, response)
    cache.close()
    reopened = ResponseCache(tmp_path)
    assert reopened.get(key) == response and len(reopened) == 1


_WRITER = textwrap.dedent(
    """
    import sys, time
    from ops.engine.cache import ResponseCache, request_key
    from ops.protocol import LLMRequest, LLMResponse, Message
    cache_dir, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = ResponseCache(cache_dir)
    while time.time() < start:
        time.sleep(0.001)
    for i in range(400):
        # Keys 0-199 are written by both processes; 200-399 by each alone.
        k = f"shared {i}" if i < 200 else f"{name} {i}"
        key = request_key("openai", "m", LLMRequest("op", (Message("user", k),)))
        cache.put(key, LLMResponse("answer " + k, "stop", "m", i, i))
        assert cache.get(key) is not None
    cache.close()
    """
)


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    start = time.time() + 1.0  # both start writing at the same instant
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), name, str(start)], cwd=ROOT)
        for name in ("a", "b")
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    cache = ResponseCache(tmp_path)
    assert len(cache) == 200 + 2 * 200
    for k in [f"shared {i}" for i in range(200)] + [
        f"{n} {i}" for n in "ab" for i in range(200, 400)
    ]:
        got = cache.get(request_key("openai", "m", LLMRequest("op", (Message("user", k),))))
        assert got is not None and got.text == "answer " + k


_KILLED = textwrap.dedent(
    """
    import os, signal, sys, time
    from ops.engine.cache import GROUP_S, ResponseCache, request_key
    from ops.protocol import LLMRequest, LLMResponse, Message
    cache = ResponseCache(sys.argv[1])
    for i in range(50):
        key = request_key("openai", "m", LLMRequest("op", (Message("user", f"q {i}"),)))
        cache.put(key, LLMResponse(f"a {i}", "stop", "m", 1, 1))
    time.sleep(GROUP_S + 0.2)  # no further answers arrive (the server hangs), then the kill
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_answers_survive_sigkill_without_close(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path)], cwd=ROOT, check=False)
    assert proc.returncode == -9
    cache = ResponseCache(tmp_path)
    assert len(cache) == 50  # committed by time, not by the arrival of a next answer
    key = request_key("openai", "m", LLMRequest("op", (Message("user", "q 7"),)))
    assert cache.get(key) == LLMResponse("a 7", "stop", "m", 1, 1)


def _key(text: str) -> bytes:
    return request_key("openai", "m", _request(text))


def test_an_answer_is_served_before_and_after_its_commit(tmp_path: Path) -> None:
    response = LLMResponse("answer", "stop", "m", 1, 2)
    cache = ResponseCache(tmp_path)
    cache.put(_key("q"), response)
    assert cache.get(_key("q")) == response  # from memory, before the writer commits it
    cache.flush()
    assert cache._pending == {}
    assert cache.get(_key("q")) == response  # from SQLite
    assert cache.get(_key("missing")) is None
    cache.close()


def test_another_connections_commit_is_seen_at_once(tmp_path: Path) -> None:
    response = LLMResponse("foreign", "stop", "m", 1, 2)
    a = ResponseCache(tmp_path)
    b = ResponseCache(tmp_path)  # another connection: as another rank's process would be
    assert a.get(_key("q")) is None
    b.put(_key("q"), response)
    b.flush()
    assert a.get(_key("q")) == response
    a.close()
    b.close()
