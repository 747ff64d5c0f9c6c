"""The response cache: keys, concurrent writers in two processes, nothing secret stored."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ops.engine.cache import (
    _ROWS_PER_INSERT,
    _SCHEMA,
    ResponseCache,
    _connect,
    _insert,
    _insert_sql,
    request_key,
)
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


def test_groups_of_any_size_are_written_with_nine_statement_shapes(tmp_path: Path) -> None:
    # The writer inserts a group of n rows as the binary digits of n (256, 128, ..., 1 rows a
    # statement), so sqlite3 compiles and caches nine statements, whatever the group sizes.
    db = _connect(tmp_path / "c.sqlite")
    db.execute(_SCHEMA)
    sizes = [0, 1, 2, 3, 255, 256, 257, 511, 700]
    written = 0
    for size in sizes:
        rows = [(f"k{written + i}".encode(), f"v{written + i}".encode()) for i in range(size)]
        db.execute("BEGIN")
        _insert(db, rows)
        db.execute("COMMIT")
        written += size
    keys = {row[0] for row in db.execute("SELECT key FROM responses")}
    assert keys == {f"k{i}".encode() for i in range(written)}
    assert db.execute("SELECT value FROM responses WHERE key = ?", (b"k700",)).fetchone() == (
        b"v700",
    )
    assert {len(_insert_sql(n).split("(?, ?)")) - 1 for n in _ROWS_PER_INSERT} == set(
        _ROWS_PER_INSERT
    )
    assert _insert_sql.cache_info().currsize <= len(_ROWS_PER_INSERT)
    db.close()


def _key(text: str) -> bytes:
    return request_key("openai", "m", _request(text))


def _statements(cache: ResponseCache) -> list[str]:
    """Every SQL statement the cache's main connection runs from now on."""
    seen: list[str] = []
    cache._db.set_trace_callback(seen.append)
    return seen


def test_a_fresh_cache_answers_a_miss_without_sqlite(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    seen = _statements(cache)
    assert [cache.get(_key(f"missing {i}")) for i in range(100)] == [None] * 100
    assert seen == []
    cache.close()


def test_own_answers_are_read_from_sqlite_once_committed(tmp_path: Path) -> None:
    response = LLMResponse("answer", "stop", "m", 1, 2)
    cache = ResponseCache(tmp_path)
    cache.put(_key("q"), response)
    cache.flush()  # committed, and dropped from _pending
    assert cache._pending == {}
    seen = _statements(cache)
    assert cache.get(_key("q")) == response
    assert any(s.startswith("SELECT value FROM responses") for s in seen)
    assert cache._shortcut  # its own commits do not turn the shortcut off
    cache.close()


def test_a_cache_opened_non_empty_reads_sqlite_for_a_miss(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path)
    first.put(_key("q"), LLMResponse("answer", "stop", "m", 1, 2))
    first.close()
    cache = ResponseCache(tmp_path)
    assert not cache._shortcut
    seen = _statements(cache)
    assert cache.get(_key("missing")) is None
    assert any(s.startswith("SELECT value FROM responses") for s in seen)
    cache.close()


def test_a_foreign_commit_turns_the_shortcut_off(tmp_path: Path) -> None:
    response = LLMResponse("foreign", "stop", "m", 1, 2)
    a = ResponseCache(tmp_path)
    b = ResponseCache(tmp_path)  # another connection: as another rank's process would be
    assert a._shortcut and b._shortcut
    b.put(_key("q"), response)
    b.flush()
    # A writes nothing, yet its writer looks at data_version at least once a group.
    deadline = time.monotonic() + 3.0
    while a.get(_key("q")) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.get(_key("q")) == response
    assert not a._shortcut and b._shortcut  # B's own commit leaves B's shortcut on
    seen = _statements(a)
    assert a.get(_key("missing")) is None
    assert any(s.startswith("SELECT value FROM responses") for s in seen)
    a.close()
    b.close()
