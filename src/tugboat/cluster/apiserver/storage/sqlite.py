"""Embedded SQLite datastore: an append-only revision log (kine's model) plus a latest-value index.

Tables:
- ``log(id INTEGER PRIMARY KEY AUTOINCREMENT, name, created, deleted, create_revision,
  prev_revision, value, old_value)``: one row per write; ``id`` is the revision. Deletions are rows
  with ``deleted=1`` whose ``value`` is the last value.
- ``kv(name PRIMARY KEY, revision, create_revision, value)``: the latest live value of each key, so
  reads and lists never need kine's ``MAX(id) GROUP BY name``.
- ``meta(k, v)``: ``compact_rev``.

Writes are group-committed on the event loop thread: every write submitted in one loop iteration
goes into one transaction (WAL, ``synchronous=NORMAL``: a commit is a write() into the page cache
and survives the process being killed; callers are answered only after their commit). There is no
writer thread on purpose: a writer thread needs the interpreter lock between every SQLite call,
and while the loop is busy with requests it waited up to the 5 ms switch interval each time, which
made commits (and so write latency) slow and erratic. Checkpoints, the part that fsyncs, run in a
reader thread (see ``_maybe_checkpoint``); the loop never waits for a lock (``busy_timeout=0`` on
the write connection: a busy database makes the batch retry a millisecond later). Point reads and
small lists run inline on the loop thread (WAL readers never wait for the writer); large lists go
to a reader thread. This process is the only writer; watchers are fed from the commits, and a
watch from an older revision first replays the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tugboat.cluster.apiserver.storage.base import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    prefix_end,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  created INTEGER NOT NULL,
  deleted INTEGER NOT NULL,
  create_revision INTEGER NOT NULL,
  prev_revision INTEGER NOT NULL,
  value BLOB,
  old_value BLOB
);
CREATE INDEX IF NOT EXISTS log_name_id ON log(name, id);
CREATE TABLE IF NOT EXISTS kv (
  name TEXT PRIMARY KEY,
  revision INTEGER NOT NULL,
  create_revision INTEGER NOT NULL,
  value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""



def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(exc)


def _private_files(path: str) -> None:
    """The database holds every Secret: owner-only. Create it 0600 before SQLite does (SQLite
    gives its -wal/-shm files the database's mode), and tighten files an older version left."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for p in (path, path + "-wal", path + "-shm", path + "-journal", path + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _Op:
    __slots__ = ("args", "fut", "kind")

    def __init__(self, kind: str, args: tuple[Any, ...], fut: asyncio.Future[Any]):
        self.kind = kind
        self.args = args
        self.fut = fut


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: list[_Op] = []
        self._flush_handle: asyncio.Handle | None = None
        self._started = False
        self._closed = False
        self._commits = 0
        self._checkpointing = False
        self._busy_since = 0.0
        self._hold_writes = False
        self._ckpt_idle = asyncio.Event()
        self._ckpt_idle.set()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[list[Event] | None]] = set()
        self._rev = 0  # last revision written
        self._delivered_rev = 0  # last revision committed and announced to watchers (loop thread)
        self._compact_rev = 0

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        # one writer process per file: a second API server on the same file would corrupt revisions
        import fcntl

        self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreUnavailable(f"{self.path} is in use by another API server") from None
        _private_files(self.path)
        conn = _connect(self.path)
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT MAX(id) FROM log").fetchone()
        self._rev = int(row[0] or 0)
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='log'").fetchone()
        self._rev = max(self._rev, int(seq[0]) if seq else 0)  # the next id is one more
        if self._rev == 0:
            # make revision 1 exist, so an empty store still has a resourceVersion to watch from
            conn.execute(
                "INSERT INTO log(name, created, deleted, create_revision, prev_revision, value) "
                "VALUES ('/compact_rev_key', 0, 0, 0, 0, x'')"
            )
            self._rev = 1
        self._delivered_rev = self._rev
        row = conn.execute("SELECT v FROM meta WHERE k='compact_rev'").fetchone()
        self._compact_rev = int(row[0]) if row else 0
        # checkpoints run in a reader thread (_maybe_checkpoint), not inside a commit on the loop;
        # while one holds the write lock, BEGIN fails at once and _flush retries a moment later
        # (the loop never sleeps in SQLite's busy handler)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA journal_size_limit=67108864")
        self._wconn = conn
        self._main_conn = _connect(self.path)  # inline reads on the loop thread
        self._started = True

    async def close(self) -> None:
        if self._started:
            await self._ckpt_idle.wait()
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            self._wconn.execute("PRAGMA busy_timeout=30000")  # the last flush may wait here
            self._flush()
            self._closed = True
            self._started = False
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._wconn.close()
            self._main_conn.close()
            os.close(self._lock_fd)
        for q in list(self._subscribers):
            q.put_nowait(None)
        self._readers.shutdown(wait=True)

    # --- reads -----------------------------------------------------------------------------------
    def _rconn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = _connect(self.path)
            self._local.conn = c
        return c

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, fn, *args)

    async def current_revision(self) -> int:
        return self._delivered_rev

    async def compact_revision(self) -> int:
        return self._compact_rev

    def _get_sync(self, key: str) -> KeyValue | None:
        row = self._rconn().execute("SELECT revision, create_revision, value FROM kv WHERE name=?", (key,)).fetchone()
        if row is None:
            return None
        return KeyValue(key, bytes(row[2]), row[0], row[1])

    async def get(self, key: str) -> KeyValue | None:
        row = self._main_conn.execute("SELECT revision, create_revision, value FROM kv WHERE name=?", (key,)).fetchone()
        if row is None:
            return None
        return KeyValue(key, bytes(row[2]), row[0], row[1])

    def _list_sync(self, prefix: str, revision: int, start_after: str, limit: int,
                   conn: sqlite3.Connection | None = None) -> ListResult:
        conn = conn or self._rconn()
        lo = max(prefix, start_after + "\x00") if start_after else prefix
        hi = prefix_end(prefix)
        lim = limit + 1 if limit else -1
        conn.execute("BEGIN")
        try:
            cur = int(conn.execute("SELECT MAX(id) FROM log").fetchone()[0] or 0)
            if revision and revision < cur:
                crow = conn.execute("SELECT v FROM meta WHERE k='compact_rev'").fetchone()
                crev = int(crow[0]) if crow else 0
                if revision < crev:
                    raise Compacted(revision, crev)
                rows = conn.execute(
                    "SELECT l.name, l.id, l.create_revision, l.value FROM log l JOIN ("
                    " SELECT name, MAX(id) AS mid FROM log WHERE name >= ? AND name < ? AND id <= ?"
                    " GROUP BY name) m ON l.id = m.mid WHERE l.deleted = 0 ORDER BY l.name LIMIT ?",
                    (lo, hi, revision, lim),
                ).fetchall()
                at = revision
            else:
                rows = conn.execute(
                    "SELECT name, revision, create_revision, value FROM kv WHERE name >= ? AND name < ?"
                    " ORDER BY name LIMIT ?",
                    (lo, hi, lim),
                ).fetchall()
                at = cur
        finally:
            conn.execute("COMMIT")
        more = bool(limit) and len(rows) > limit
        if more:
            rows = rows[:limit]
        return ListResult([KeyValue(r[0], bytes(r[3]), r[1], r[2]) for r in rows], at, more)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        if 0 < limit <= 100 and not revision:
            return self._list_sync(prefix, revision, start_after, limit, self._main_conn)
        return await self._read(self._list_sync, prefix, revision, start_after, limit)

    def _count_sync(self, prefix: str) -> int:
        row = self._rconn().execute(
            "SELECT COUNT(*) FROM kv WHERE name >= ? AND name < ?", (prefix, prefix_end(prefix))
        ).fetchone()
        return int(row[0])

    async def count(self, prefix: str) -> int:
        return await self._read(self._count_sync, prefix)

    # --- writes ----------------------------------------------------------------------------------
    async def _submit(self, kind: str, *args: Any) -> Any:
        if self._closed:
            raise StoreUnavailable(f"{self.path} is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()  # type: ignore[union-attr]
        self._pending.append(_Op(kind, args, fut))
        if self._flush_handle is None:
            # run after everything else this loop iteration submits: one transaction for all
            self._flush_handle = self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return await fut

    async def create(self, key: str, value: bytes) -> int:
        return await self._submit("create", key, value)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return await self._submit("update", key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        return await self._submit("delete", key, expected_revision)

    async def compact(self, revision: int) -> None:
        revision = min(revision, self._rev)
        if revision <= self._compact_rev:
            return
        # the compact revision is recorded first (reads and watches older than it fail from now
        # on), then the log is trimmed in small transactions in ascending id order, so the loop
        # is never held for long and a list at a revision >= it stays correct between chunks
        await self._submit("compact", revision)
        row = self._main_conn.execute("SELECT MIN(id) FROM log").fetchone()
        lo = int(row[0] or 1) - 1
        while lo < revision:
            hi = min(lo + self.compact_chunk, revision)
            await self._submit("compact_chunk", lo, hi, revision)
            lo = hi

    compact_chunk = 2000  # log ids per compaction transaction

    def _flush(self) -> None:
        """Commit every write submitted in this loop iteration as one transaction, on the loop
        thread: no thread hand-off, no GIL ping-pong with a writer thread (which made commits
        wait for the interpreter lock while requests were being handled), and callers are
        answered in the same iteration. A commit in WAL mode with synchronous=NORMAL is a
        write() into the page cache; the fsyncs happen in checkpoints, which a reader thread runs."""
        self._flush_handle = None
        if self._hold_writes:
            return  # a checkpoint is finishing; _checkpoint_done flushes
        batch, self._pending = self._pending, []
        if not batch:
            return
        conn = self._wconn
        results: list[tuple[Any, BaseException | None]] = []
        events: list[Event] = []
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or self._closed:
                    raise
                now = time.monotonic()
                self._busy_since = self._busy_since or now
                if now - self._busy_since > 30:
                    raise
                # a checkpoint finishing: keep the order, try again in a millisecond
                self._pending[:0] = batch
                if self._flush_handle is None:
                    self._flush_handle = self._loop.call_later(0.001, self._flush)  # type: ignore[union-attr]
                return
            self._busy_since = 0.0
            for op in batch:
                try:
                    results.append((self._apply(conn, op, events), None))
                except sqlite3.Error:
                    raise  # a half-applied op: the whole transaction goes
                except Exception as exc:  # KeyExists, RevisionMismatch…: checked before any change
                    results.append((None, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction failed as a whole: nobody was acknowledged
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            with contextlib.suppress(Exception):
                self._rev = int(conn.execute("SELECT MAX(id) FROM log").fetchone()[0] or 0)
            if isinstance(exc, sqlite3.Error):
                exc = StoreUnavailable(f"SQLite commit failed: {exc}")
            results = [(None, exc) for _ in batch]
            events = []
        for op, (res, err) in zip(batch, results, strict=True):
            if op.fut.done():  # the caller went away; the write happened anyway
                continue
            if err is not None:
                op.fut.set_exception(err)
            else:
                op.fut.set_result(res)
        if events:
            self._delivered_rev = max(self._delivered_rev, events[-1].revision)
            for q in list(self._subscribers):
                q.put_nowait(events)
        self._commits += 1
        if self._commits % 4 == 0:
            self._maybe_checkpoint()

    # checkpoint when the WAL passes 16 MB (SQLite by default does at 4 MB, inside a commit): fewer
    # RESTART pauses; the copying and fsyncs happen off the loop anyway
    wal_checkpoint_bytes = 16 * 1024 * 1024

    def _maybe_checkpoint(self) -> None:
        """Checkpoint the WAL off the loop when it has grown: a PASSIVE checkpoint in a reader
        thread copies the bulk and does the fsyncs while writes go on; then writes pause (held in
        ``_pending``; reads, answers and watches carry on) while a RESTART checkpoint copies the
        few pages committed meanwhile, so that the next write starts the WAL file from its
        beginning again (else it only grows). The pause is short: the RESTART gives up after
        ``restart_wait_ms`` if a long read keeps it from finishing."""
        if self._checkpointing or self._closed:
            return
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if size < self.wal_checkpoint_bytes:
            return
        self._checkpointing = True
        self._ckpt_idle.clear()
        fut = self._loop.run_in_executor(self._readers, self._checkpoint_sync, "PASSIVE")  # type: ignore[union-attr]
        fut.add_done_callback(self._passive_done)

    restart_wait_ms = 20

    def _checkpoint_sync(self, mode: str) -> None:
        c = self._rconn()
        if mode == "RESTART":
            c.execute(f"PRAGMA busy_timeout={self.restart_wait_ms}")
        try:
            c.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        finally:
            if mode == "RESTART":
                c.execute("PRAGMA busy_timeout=30000")

    def _passive_done(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None or self._closed:
            self._checkpoint_done(fut)
            return
        self._hold_writes = True  # _flush keeps the writes pending until the RESTART is done
        nxt = self._loop.run_in_executor(self._readers, self._checkpoint_sync, "RESTART")  # type: ignore[union-attr]
        nxt.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, fut: asyncio.Future[None]) -> None:
        self._checkpointing = False
        self._hold_writes = False
        self._ckpt_idle.set()
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("SQLite checkpoint failed: %s", fut.exception())
        if self._pending and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _append(
        self, conn: sqlite3.Connection, key: str, created: int, deleted: int, crev: int, prev: int,
        value: bytes, old: bytes | None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO log(name, created, deleted, create_revision, prev_revision, value, old_value)"
            " VALUES (?,?,?,?,?,?,?)",
            (key, created, deleted, crev, prev, value, old),
        )
        rev = int(cur.lastrowid or 0)
        self._rev = rev
        return rev

    def _apply(self, conn: sqlite3.Connection, op: _Op, events: list[Event]) -> Any:
        if op.kind == "compact":
            return self._compact_sync(conn, op.args[0])
        if op.kind == "compact_chunk":
            lo, hi, revision = op.args
            conn.execute(
                "DELETE FROM log WHERE id > ? AND id <= ? AND name != '/compact_rev_key' AND ("
                " deleted = 1 OR id < (SELECT MAX(l2.id) FROM log l2 WHERE l2.name = log.name AND l2.id <= ?))",
                (lo, hi, revision),
            )
            return None
        key = op.args[0]
        if op.kind == "create":
            value = op.args[1]
            rev = self._rev + 1  # ids are assigned in order by this connection only
            # the insert is the existence check (one statement less than SELECT + INSERT)
            if conn.execute("INSERT OR IGNORE INTO kv(name, revision, create_revision, value) VALUES (?,?,?,?)",
                            (key, rev, rev, value)).rowcount == 0:
                raise KeyExists(key)
            self._append(conn, key, 1, 0, rev, 0, value, None)
            if self._rev != rev:  # not expected (AUTOINCREMENT skipped an id): fix the rows up
                rev = self._rev
                conn.execute("UPDATE log SET create_revision=? WHERE id=?", (rev, rev))
                conn.execute("UPDATE kv SET revision=?, create_revision=? WHERE name=?", (rev, rev, key))
            events.append(Event("PUT", key, value, rev, rev, None, True))
            return rev
        row = conn.execute("SELECT revision, create_revision, value FROM kv WHERE name=?", (key,)).fetchone()
        if row is None:
            raise KeyNotFound(key)
        cur_kv = KeyValue(key, bytes(row[2]), row[0], row[1])
        if op.kind == "update":
            value, expected = op.args[1], op.args[2]
            if expected != row[0]:
                raise RevisionMismatch(cur_kv)
            rev = self._append(conn, key, 0, 0, row[1], row[0], value, cur_kv.value)
            conn.execute("UPDATE kv SET revision=?, value=? WHERE name=?", (rev, value, key))
            events.append(Event("PUT", key, value, rev, row[1], cur_kv.value))
            return rev
        if op.kind == "delete":
            expected = op.args[1]
            if expected and expected != row[0]:
                raise RevisionMismatch(cur_kv)
            rev = self._append(conn, key, 0, 1, row[1], row[0], cur_kv.value, cur_kv.value)
            conn.execute("DELETE FROM kv WHERE name=?", (key,))
            events.append(Event("DELETE", key, cur_kv.value, rev, row[1], cur_kv.value))
            return rev, cur_kv
        raise ValueError(op.kind)

    def _compact_sync(self, conn: sqlite3.Connection, revision: int) -> None:
        """Record the compact revision (the rows go in ``compact_chunk`` ops after it)."""
        revision = min(revision, self._rev)
        if revision <= self._compact_rev:
            return
        conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('compact_rev', ?)", (revision,))
        self._compact_rev = revision

    # --- watch -----------------------------------------------------------------------------------
    def _history_sync(self, prefix: str, after: int, upto: int) -> list[Event]:
        rows = self._rconn().execute(
            "SELECT id, name, created, deleted, create_revision, value, old_value FROM log"
            " WHERE id > ? AND id <= ? AND name >= ? AND name < ? ORDER BY id",
            (after, upto, prefix, prefix_end(prefix)),
        ).fetchall()
        out = []
        for r in rows:
            old = bytes(r[6]) if r[6] is not None else None
            out.append(Event("DELETE" if r[3] else "PUT", r[1], bytes(r[5] or b""), r[0], r[4], old, bool(r[2])))
        return out

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:  # type: ignore[override]
        if after_revision < self._compact_rev:
            raise Compacted(after_revision, self._compact_rev)
        q: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            upto = self._delivered_rev
            last = after_revision
            if after_revision < upto:
                for ev in await self._read(self._history_sync, prefix, after_revision, upto):
                    last = ev.revision
                    yield ev
                last = max(last, upto)
            while True:
                batch = await q.get()
                if batch is None:
                    return
                for ev in batch:
                    if ev.revision > last and ev.key.startswith(prefix):
                        last = ev.revision
                        yield ev
        finally:
            self._subscribers.discard(q)
