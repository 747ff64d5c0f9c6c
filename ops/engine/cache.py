"""A persistent response cache: SQLite in WAL mode, one row per request key.

Key: sha256 of (backend name, model, generation parameters including seed and attempt, rendered
messages). Nothing else goes into it or into the file: no API key, no base URL, no header. A
rerun or a resumed run answers every request it has paid for from here; a retry after a
rejected answer carries a new ``attempt`` and so a new key, hence a fresh sample.

Why SQLite: several processes (``--shard-index`` ranks) and coroutines share one cache
directory. WAL mode lets readers run beside one writer; a writer holds the lock for one short
transaction, and ``timeout`` makes a blocked writer wait rather than fail.

Why a writer thread: a committed insert waits on the disk for longer than the rest of a request
costs (bench/results/bench_ops.md), so the event loop never commits. ``put`` keeps the row in
memory, where ``get`` finds it at once, and a writer thread commits whatever has arrived every
``group_s`` in one transaction (sqlite releases the GIL while it writes).

Durability: an answer is on disk at most ``group_s`` plus one commit after it arrived, so a
``kill -9`` loses only the answers of its last ``group_s`` (a resumed run pays those again);
``synchronous=NORMAL`` never corrupts the file; ``close()`` and ``flush()`` write everything
at once. Answers another process commits meanwhile are seen by the next ``get``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from ops.engine.transport import json_bytes
from ops.protocol import LLMRequest, LLMResponse

CACHE_FILE = "responses.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
GROUP_S = 0.25  # seconds the writer thread gathers answers into one transaction


def request_key(backend: str, model: str, request: LLMRequest) -> bytes:
    """The cache key of a request: what is sent, never who sends it or with which credentials."""
    p = request.params
    payload = orjson.dumps(
        (
            backend,
            model,
            (p.temperature, p.top_p, p.max_tokens, p.seed, p.attempt),
            [(m.role, m.content) for m in request.messages],
        )
    )
    return hashlib.sha256(payload).digest()


def encode_response(response: LLMResponse) -> bytes:
    """A response as the cache stores it (and the batch store, ``ops.engine.batch_store``)."""
    return json_bytes(
        (
            response.text,
            response.finish_reason,
            response.model,
            response.prompt_tokens,
            response.completion_tokens,
            response.thinking_tokens,
        )
    )


def decode_response(value: bytes) -> LLMResponse:
    # Rows written before thinking tokens were counted have five fields.
    return LLMResponse(*orjson.loads(value))


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: autocommit unless we BEGIN; check_same_thread off for close().
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    # Switching a new file to WAL can fail with "database is locked" at once, without the busy
    # timeout, while another process (a second --shard-index rank) does the same: retry it.
    deadline = time.monotonic() + 60.0
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class ResponseCache:
    def __init__(self, cache_dir: Path | str, *, group_s: float = GROUP_S):
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        self._db = connect(self.path)
        self._db.execute(_SCHEMA)
        self._group_s = group_s
        self._lock = threading.Lock()  # guards the fields below, shared with the writer
        self._pending: dict[bytes, bytes] = {}  # not yet committed; read without the lock
        self._batch: list[tuple[bytes, bytes]] = []  # not yet taken by the writer
        self._flushes: list[threading.Event] = []
        self._stopping = False
        self._wake = threading.Event()
        self._urgent = threading.Event()  # flush() or close() waits: commit without grouping
        self._writer = threading.Thread(
            target=self._write_loop, args=(connect(self.path),), name="response-cache", daemon=True
        )
        self._writer.start()

    def get(self, key: bytes) -> LLMResponse | None:
        value = self._pending.get(key)
        if value is None:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            value = row[0]
        return decode_response(value)

    def put(self, key: bytes, response: LLMResponse) -> None:
        value = encode_response(response)
        with self._lock:
            self._pending[key] = value
            self._batch.append((key, value))
        self._wake.set()

    def flush(self) -> None:
        """Block until everything put so far is committed."""
        done = threading.Event()
        with self._lock:
            self._flushes.append(done)
        self._urgent.set()
        self._wake.set()
        done.wait()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        while True:
            self._wake.wait()
            # Let a group form (one transaction for all of it), unless someone waits for it.
            self._urgent.wait(self._group_s)
            with self._lock:
                self._wake.clear()
                self._urgent.clear()
                rows, self._batch = self._batch, []
                flushes, self._flushes = self._flushes, []
                stopping = self._stopping
            if rows:
                with db:  # BEGIN ... COMMIT
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
                with self._lock:
                    for key, value in rows:
                        if self._pending.get(key) is value:
                            del self._pending[key]
            for done in flushes:
                done.set()
            if stopping:
                break
        db.close()

    def __len__(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        if self._writer.is_alive():
            with self._lock:
                self._stopping = True
            self._urgent.set()
            self._wake.set()
            self._writer.join()
        self._db.close()
