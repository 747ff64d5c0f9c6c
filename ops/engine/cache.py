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
row in memory (served from there at once) and a writer thread commits whatever has arrived
every ``group_s`` (``GROUP_S``, 250 ms), one transaction per group; sqlite releases the GIL
while it writes. Waking the thread once per row instead cost ~120 µs of GIL hand-off per row on
the loop. Each transaction rewrites every page it touches (the key index's pages are hit at
random), so longer groups cost the writer thread less per answer. Measured here in one sitting
(the cache alone, ~300 answers/s): 37-41 µs an answer with 100 ms groups, 22-28 with 250 ms,
14-18 with 500 ms (an earlier sitting: 60 with 20 ms, 27 with 100 ms). Memory goes the other
way (a transaction's rows, bound values and dirty pages): against 100 ms groups, the
benchmark's peak RSS at concurrency 256 was ~2 MB higher with 250 ms and ~5 MB higher with
500 ms.
Durability: an answer is on disk at most ``group_s`` plus one commit after it arrived, whether
or not more answers follow, so a ``kill -9`` loses only the answers of its last ~250 ms (a
resumed run pays those again: ~75 requests at 300 a second); ``synchronous=NORMAL`` never
corrupts the file; ``close()`` and ``flush()`` write everything at once. On the loop, 2,000
of each back to back in one sitting: a key 5-11 µs (a 4 KB caption2query prompt), a miss
4-5 µs (a SQLite read), a put 4-6 µs, a hit 9-16 µs. After a pause, as a run issues them
between network waits, each costs several times that (a miss after 3 ms idle: ~50 µs).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from functools import cache
from pathlib import Path

import orjson

from ops.protocol import LLMRequest, LLMResponse

CACHE_FILE = "responses.sqlite"
# A rowid table (the key's index beside it), not WITHOUT ROWID: a ~1.5 KB answer is over a
# twentieth of a page, where SQLite advises against WITHOUT ROWID. Measured here (groups of 20):
# 18 µs CPU per insert and half the file, against 53 µs. Older cache files keep their table:
# the statements are the same for both.
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


# Rows per INSERT statement: powers of two up to 256 (512 parameters, under the 999 that SQLite
# before 3.32 allows). A group of n rows is inserted as the binary digits of n, so only these
# nine statements are ever compiled, and sqlite3's statement cache keeps them: one statement
# per distinct row count (a group's size varies with the answer rate) was compiled each time
# and cached, up to 128 of them at a few hundred KB each (~40 MB measured for 300 groups of
# 1-400 rows, ~3 MB with nine sizes).
_ROWS_PER_INSERT = (256, 128, 64, 32, 16, 8, 4, 2, 1)


@cache
def _insert_sql(rows: int) -> str:
    return "INSERT OR REPLACE INTO responses VALUES " + ", ".join(["(?, ?)"] * rows)


def _insert(db: sqlite3.Connection, rows: list[tuple[bytes, bytes]]) -> None:
    """Insert ``rows`` with a few multi-row statements, not one per row: sqlite3 releases the
    GIL for each statement it steps and takes it back after, so ``executemany`` makes the
    writer thread contend with the event loop for the GIL twice a row, a multi-row ``VALUES``
    list twice a statement (measured: 1,600-2,500 -> 440-610 context switches per 2,000
    answers)."""
    start = 0
    for size in _ROWS_PER_INSERT:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            db.execute(_insert_sql(size), [x for row in chunk for x in row])
            start += size


def _connect(path: Path) -> sqlite3.Connection:
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
        self._db = _connect(self.path)
        self._db.execute(_SCHEMA)
        self._group_s = group_s
        self._lock = threading.Lock()  # guards the three fields below, shared with the writer
        self._pending: dict[bytes, bytes] = {}  # not yet committed; read without the lock
        self._batch: list[tuple[bytes, bytes]] = []  # not yet taken by the writer
        self._flushes: list[threading.Event] = []
        self._stopping = False
        self._wake = threading.Event()
        self._urgent = threading.Event()  # flush() or close() waits: commit without grouping
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
        with self._lock:
            self._pending[key] = value
            self._batch.append((key, value))
            # The writer clears ``_wake`` under this lock when it takes the batch, so a set
            # event here means this row is still ahead of it; Event.set takes a Condition and
            # notifies (~2 µs), and the event stays set through most of a group's 250 ms.
            asleep = not self._wake.is_set()
        if asleep:
            self._wake.set()

    def flush(self) -> None:
        """Block until everything put so far is committed."""
        done = threading.Event()
        with self._lock:
            self._flushes.append(done)
        self._urgent.set()
        self._wake.set()
        done.wait()

    def _write_loop(self) -> None:
        db = _connect(self.path)
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
                    _insert(db, rows)
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
