"""A persistent response cache: SQLite in WAL mode, one row per request key.

Key: sha256 of (backend name, model, generation parameters including seed and attempt, rendered
messages). Nothing else goes into it or into the file: no API key, no base URL, no header. A
rerun or a resumed run answers every request it has paid for from here; a retry after a
rejected answer carries a new ``attempt`` and so a new key, hence a fresh sample.

Why SQLite: several processes (``--shard-index`` ranks) and coroutines share one cache
directory. WAL mode lets readers run beside one writer; a writer holds the lock for one short
transaction, and ``timeout`` makes a blocked writer wait rather than fail.

The event loop never waits on the disk. Measured here, a committed insert costs ~75 µs CPU and
~370 µs wall (WAL append, checkpoints), more than the rest of a request. So ``put`` keeps the
row in memory (served from there) and hands rows to a writer thread in batches, every
``batch_rows`` rows or ``batch_s`` seconds, one transaction each; sqlite releases the GIL while
it writes. Handing over every row woke the thread 2,000 times in a 2,000-request run and cost
~120 µs of GIL hand-off per row on the loop. ``synchronous=NORMAL``, and the batching: a
``kill -9`` or power cut loses at most the last batch of answers (paid for again), never
corrupts the file; ``close()`` writes everything. On the loop: a key ~4 µs, a miss ~5 µs,
a hit ~35 µs, a put ~1 µs.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from ops.protocol import LLMRequest, LLMResponse

CACHE_FILE = "responses.sqlite"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
)


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


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: autocommit unless we BEGIN; check_same_thread off for close().
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class ResponseCache:
    def __init__(self, cache_dir: Path | str, *, batch_rows: int = 256, batch_s: float = 0.1):
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        self._db = _connect(self.path)
        self._db.execute(_SCHEMA)
        self._pending: dict[bytes, bytes] = {}  # not yet committed, served from here
        self._batch: list[tuple[bytes, bytes]] = []  # not yet handed to the writer
        self._batch_rows, self._batch_s = batch_rows, batch_s
        self._handed_at = time.monotonic()
        self._queue: queue.SimpleQueue[list[tuple[bytes, bytes]] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._writer = threading.Thread(target=self._write_loop, name="response-cache", daemon=True)
        self._writer.start()

    def get(self, key: bytes) -> LLMResponse | None:
        value = self._pending.get(key)
        if value is None:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            value = row[0]
        text, finish_reason, model, prompt_tokens, completion_tokens = orjson.loads(value)
        return LLMResponse(text, finish_reason, model, prompt_tokens, completion_tokens)

    def put(self, key: bytes, response: LLMResponse) -> None:
        value = orjson.dumps(
            (
                response.text,
                response.finish_reason,
                response.model,
                response.prompt_tokens,
                response.completion_tokens,
            )
        )
        self._pending[key] = value
        self._batch.append((key, value))
        if (
            len(self._batch) >= self._batch_rows
            or time.monotonic() - self._handed_at >= self._batch_s
        ):
            self._hand_over()

    def _hand_over(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []
        self._handed_at = time.monotonic()

    def flush(self) -> None:
        """Block until everything put so far is committed."""
        self._hand_over()
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def _write_loop(self) -> None:
        db = _connect(self.path)
        stop = False
        while not stop:
            items = [self._queue.get()]
            while True:  # whatever queued up meanwhile joins this transaction
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for item in items if isinstance(item, list) for row in item]
            if rows:
                with db:  # BEGIN ... COMMIT
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
                for key, value in rows:
                    if self._pending.get(key) is value:
                        del self._pending[key]
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                stop = stop or item is None
        db.close()

    def __len__(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        if self._writer.is_alive():
            self._hand_over()
            self._queue.put(None)
            self._writer.join()
        self._db.close()
