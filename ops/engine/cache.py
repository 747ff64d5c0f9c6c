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
4-5 µs (a SQLite read; a fresh cache skips it, below), a put 4-6 µs, a hit 9-16 µs. After a
pause, as a run issues them between network waits, each costs several times that (a miss after
3 ms idle: ~50 µs).

Misses without SQLite. In a fresh run nearly every lookup misses, and the SELECT is ~30 µs in a
real run (cold caches). If the table was empty at open (one read snapshot with the writer's
``PRAGMA data_version`` baseline), an answer can only come from this instance's own ``put`` or
from another connection's commit. Own keys set two bits of a bitmap (``_BLOOM_BITS``) in
``put``; a miss whose bits are not both set is answered without SQLite. The writer thread's
connection sees every other connection's commit as a change of ``data_version`` (never its
own); at the first change it turns the shortcut off for good, and while the shortcut is on it
wakes every ``group_s`` to look even when idle. So the shortcut is exact for this instance's own
answers and for everything committed before open; a file non-empty at open never uses it, and
with several ranks on one directory the first commit of any rank ends it in the others. Its
one staleness window: an answer another process commits while this one runs is seen within
about one group (~250 ms); a request for it in that window is sent again and its answer
stored, never a wrong answer. Hot-loop figures (2,000 distinct missing keys back to back, two
runs of five in one sitting): a miss 0.5-0.7 µs with the shortcut, 3.6-5.7 µs with the SQLite
read (a cache opened non-empty); a put's two bits are within the noise of its 5-8 µs.
In ``bench/bench_ops.py``'s engine run at concurrency 64 (thread CPU around each call), ``get``
went from 31-33 to 6 µs an operation and ``put`` from 13 to 19-21 µs (the bits, cold).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
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
# Bits in the bitmap of this instance's own keys (1 MiB), two bits a key. A false positive
# only costs the SQLite read of today; its rate after n puts is (1 - e^(-2n/2^23))^2:
# ~6e-6 at 10,000 answers, ~6e-4 at 100,000, ~4.5% at 1,000,000.
_BLOOM_BITS = 1 << 23
_BLOOM_MASK = _BLOOM_BITS - 1
_two_u32 = struct.Struct("<2I").unpack_from


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


def _bloom_bits(key: bytes) -> tuple[int, int, int, int]:
    """Byte index and mask of each of the key's two bits in the bitmap, from the key's first 8
    bytes: a SHA-256 digest is uniform already, so no further hashing."""
    a, b = _two_u32(key)
    a &= _BLOOM_MASK
    b &= _BLOOM_MASK
    return a >> 3, 1 << (a & 7), b >> 3, 1 << (b & 7)


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
        # The writer's connection is opened here, after the table exists (creating it is a
        # commit by another connection). Its data_version baseline and the emptiness check are
        # read in one snapshot: a foreign commit is then either in it (the table is not empty)
        # or after it (data_version changes). Two separate reads would leave a gap between them.
        writer_db = _connect(self.path)
        writer_db.execute("BEGIN")
        version = writer_db.execute("PRAGMA data_version").fetchone()[0]
        empty = writer_db.execute("SELECT 1 FROM responses LIMIT 1").fetchone() is None
        writer_db.execute("COMMIT")
        # Misses may skip SQLite while this is True (see the module docstring). Only the writer
        # thread turns it off, and never back on; a bool store is atomic under the GIL.
        self._shortcut = empty
        self._bloom = bytearray(_BLOOM_BITS // 8 if empty else 0)  # this instance's own keys
        self._group_s = group_s
        self._lock = threading.Lock()  # guards the three fields below, shared with the writer
        self._pending: dict[bytes, bytes] = {}  # not yet committed; read without the lock
        self._batch: list[tuple[bytes, bytes]] = []  # not yet taken by the writer
        self._flushes: list[threading.Event] = []
        self._stopping = False
        self._wake = threading.Event()
        self._urgent = threading.Event()  # flush() or close() waits: commit without grouping
        self._writer = threading.Thread(
            target=self._write_loop, args=(writer_db, version), name="response-cache", daemon=True
        )
        self._writer.start()

    def get(self, key: bytes) -> LLMResponse | None:
        value = self._pending.get(key)
        if value is None:
            if self._shortcut:
                # Every own key set both its bits in put before it reached _pending or the
                # writer, and no other connection had committed when the writer last looked
                # (at most ~a group ago): a clear bit means a miss.
                i, m, j, n = _bloom_bits(key)
                if not (self._bloom[i] & m and self._bloom[j] & n):
                    return None
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
        if self._shortcut:
            # On this thread, before the row is visible anywhere: get never misses an own key.
            i, m, j, n = _bloom_bits(key)
            self._bloom[i] |= m
            self._bloom[j] |= n
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

    def _notice_foreign(self, db: sqlite3.Connection, version: int) -> None:
        """Turn the shortcut off for good once another connection has committed: the writer's
        own commits never change ``data_version``, and the main connection never writes."""
        if db.execute("PRAGMA data_version").fetchone()[0] != version:
            self._shortcut = False

    def _write_loop(self, db: sqlite3.Connection, version: int) -> None:
        while True:
            if self._shortcut:
                # Look for foreign commits at least once a group, even when nothing is put.
                woke = self._wake.wait(self._group_s)
                self._notice_foreign(db, version)
                if not woke:
                    continue
            else:
                self._wake.wait()  # nothing to look for: sleep until there is work
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
                if self._shortcut:
                    self._notice_foreign(db, version)
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
