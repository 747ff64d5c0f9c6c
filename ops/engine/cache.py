"""A persistent response cache: SQLite in WAL mode, one row per request key.

Key: sha256 of (backend name, model, generation parameters including seed and attempt, rendered
messages). Nothing else goes into it or into the file: no API key, no base URL, no header. A
rerun or a resumed run answers every request it has paid for from here; a retry after a
rejected answer carries a new ``attempt`` and so a new key, hence a fresh sample.

Why SQLite: several processes (``--shard-index`` ranks) and coroutines share one cache
directory. WAL mode lets readers run beside one writer; the writer lock is held only for one
tiny insert, and ``timeout`` makes a blocked writer wait rather than fail. ``synchronous=NORMAL``
makes a commit a write to the WAL without fsync: a power cut may lose the last few answers
(they are paid for again), never corrupt the file. Measured here: a miss costs ~6 µs, a hit
~10 µs, an insert ~25 µs (``bench/bench_cache.py``), all synchronous on the event loop, which is
cheaper than handing each one to a thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
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


class ResponseCache:
    def __init__(self, cache_dir: Path | str):
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        # isolation_level=None: autocommit, each insert is its own short transaction.
        self._db = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get(self, key: bytes) -> LLMResponse | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        text, finish_reason, model, prompt_tokens, completion_tokens = orjson.loads(row[0])
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
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()
