"""What batch mode keeps on disk so that a killed run pays for no request twice.

SQLite (WAL, the response cache's connection settings) in ``<cache_dir>/batches.sqlite``, beside
the response cache, shared by every process of a run (``--shard-index`` ranks) like the cache:

- ``batches``: one row per batch, under a label of ours. Written *before* the batch is
  submitted (state ``submitting``), given the provider's id as soon as the provider answers
  (``in_flight``), then ``done``; ``abandoned`` when a submission cut off by a kill turns out
  never to have reached the provider.
- ``batch_requests``: the request keys (``ops.engine.cache.request_key``) of each batch, written
  with its row. A request whose key belongs to a batch still out is waited for, never sent again.
- ``answers``: every answer of a batch that came back, written in the same transaction that
  marks it ``done``, before any waiting operation resumes: a run killed after that finds them
  here, whatever their finish reason (the response cache keeps only complete ones). Answers the
  response cache also holds are dropped when a store is opened: the engine finds those first.

Every write commits at once (``synchronous=NORMAL``: a kill loses nothing committed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.engine.cache import CACHE_FILE, connect, decode_response, encode_response
from ops.protocol import LLMResponse

STORE_FILE = "batches.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    label TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    remote_id TEXT,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    key BLOB NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (key, label)
);
CREATE INDEX IF NOT EXISTS batch_requests_by_label ON batch_requests (label);
CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, value BLOB NOT NULL);
"""


@dataclass(frozen=True)
class BatchRecord:
    label: str
    remote_id: str | None  # None: the provider has not acknowledged it (yet, or ever)
    created: float  # time.time() when it was recorded
    keys: tuple[bytes, ...]


class BatchStore:
    def __init__(self, cache_dir: Path | str):
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / STORE_FILE
        self._db = connect(self.path)
        self._db.executescript(_SCHEMA)
        cache = directory / CACHE_FILE
        if cache.exists():
            self._drop_cached(cache)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _drop_cached(self, cache: Path) -> None:
        self._db.execute("ATTACH DATABASE ? AS cache", (str(cache),))
        try:
            if self._db.execute(
                "SELECT 1 FROM cache.sqlite_master WHERE name = 'responses'"
            ).fetchone():
                self._db.execute(
                    "DELETE FROM answers WHERE key IN (SELECT key FROM cache.responses)"
                )
        finally:
            self._db.execute("DETACH DATABASE cache")

    def answer(self, key: bytes) -> LLMResponse | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else decode_response(row[0])

    def batch_of(self, key: bytes) -> str | None:
        """The label of the batch still out that carries ``key``, if any."""
        row = self._db.execute(
            "SELECT b.label FROM batch_requests r JOIN batches b ON b.label = r.label "
            "WHERE r.key = ? AND b.state IN ('submitting', 'in_flight') "
            "ORDER BY b.created DESC LIMIT 1",
            (key,),
        ).fetchone()
        return None if row is None else str(row[0])

    def begin(self, label: str, backend: str, model: str, keys: Iterable[bytes]) -> None:
        """Record a batch about to be submitted, with its request keys."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, NULL, 'submitting', ?)",
                (label, backend, model, time.time()),
            )
            db.executemany(
                "INSERT OR IGNORE INTO batch_requests VALUES (?, ?)", ((k, label) for k in keys)
            )

    def submitted(self, label: str, remote_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET remote_id = ?, state = 'in_flight' WHERE label = ?",
                (remote_id, label),
            )

    def record(self, label: str) -> BatchRecord:
        row = self._db.execute(
            "SELECT remote_id, created FROM batches WHERE label = ?", (label,)
        ).fetchone()
        assert row is not None, f"no batch {label} in {self.path}"
        keys = self._db.execute(
            "SELECT key FROM batch_requests WHERE label = ? ORDER BY rowid", (label,)
        ).fetchall()
        return BatchRecord(label, row[0], float(row[1]), tuple(bytes(k) for (k,) in keys))

    def finish(self, label: str, answers: Mapping[bytes, LLMResponse]) -> None:
        """Store a batch's answers and mark it done, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO answers VALUES (?, ?)",
                ((key, encode_response(r)) for key, r in answers.items()),
            )
            db.execute("UPDATE batches SET state = 'done' WHERE label = ?", (label,))

    def abandon(self, label: str) -> None:
        """A submission that never reached the provider: its requests are free to go again."""
        with self._transaction() as db:
            db.execute("UPDATE batches SET state = 'abandoned' WHERE label = ?", (label,))

    def close(self) -> None:
        self._db.close()
