"""Embedded SQLite datastore: an append-only revision log (kine's model) plus a latest-value index.

Tables:
- ``log(id INTEGER PRIMARY KEY AUTOINCREMENT, name, created, deleted, create_revision,
  prev_revision, value, old_value)``: one row per write; ``id`` is the revision. Deletions are rows
  with ``deleted=1`` whose ``value`` is the last value.
- ``kv(name PRIMARY KEY, revision, create_revision, value)``: the latest live value of each key, so
  reads and lists never need kine's ``MAX(id) GROUP BY name``.
- ``meta(k, v)``: ``compact_rev``.

One writer thread owns the write connection and commits in groups (WAL, ``synchronous=NORMAL``: a
commit survives the process being killed; the caller is answered only after its commit). The loop
hands writes over once per loop iteration (a list of all writes submitted in that iteration, so
one thread wake-up, not one per write), and the writer commits everything queued in one
transaction; SQLite runs without the GIL, so commits overlap with request handling. Point reads
and small lists run inline on the loop thread (WAL readers never wait for the writer); large lists
go to a reader thread. This process is the only writer; watchers are fed from the writer's
commits, and a watch from an older revision first replays the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
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



def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _Op:
    __slots__ = ("args", "callback", "kind")

    def __init__(self, kind: str, args: tuple[Any, ...], callback: Callable[[Any, BaseException | None], None]):
        self.kind = kind
        self.args = args
        self.callback = callback


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: list[_Op] = []
        self._flush_handle: asyncio.Handle | None = None
        self._q: queue.Queue[list[_Op] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[list[Event] | None]] = set()
        self._rev = 0  # last revision written (writer thread)
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
        conn = _connect(self.path)
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT MAX(id) FROM log").fetchone()
        self._rev = int(row[0] or 0)
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
        self._wconn = conn
        self._main_conn = _connect(self.path)  # inline reads on the loop thread
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            if self._pending:
                self._handoff()
            self._q.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self._pending.append(_Op(kind, args, done))
        if self._flush_handle is None:
            # run after everything else this loop iteration submits: one transaction for all
            self._flush_handle = loop.call_soon(self._handoff)
        return await fut

    async def create(self, key: str, value: bytes) -> int:
        return await self._submit("create", key, value)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return await self._submit("update", key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        return await self._submit("delete", key, expected_revision)

    async def compact(self, revision: int) -> None:
        await self._submit("compact", revision)

    def _handoff(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch:
            self._q.put(batch)

    def _write_loop(self) -> None:
        conn = self._wconn
        stop = False
        while not stop:
            first = self._q.get()
            if first is None:
                break
            batch = list(first)
            while len(batch) < 2048:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.extend(nxt)
            results: list[tuple[_Op, Any, BaseException | None]] = []
            events: list[Event] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for op in batch:
                    try:
                        res = self._apply(conn, op, events)
                        results.append((op, res, None))
                    except Exception as exc:
                        results.append((op, None, exc))
                conn.execute("COMMIT")
            except Exception as exc:  # the transaction failed as a whole: nobody was acknowledged
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                self._rev = int(conn.execute("SELECT MAX(id) FROM log").fetchone()[0] or 0)
                results = [(op, None, exc) for op in batch]
                events = []
            loop = self._loop
            assert loop is not None
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                loop.call_soon_threadsafe(self._deliver, results, events)

    def _deliver(self, results: list[tuple[_Op, Any, BaseException | None]], events: list[Event]) -> None:
        for op, res, exc in results:
            op.callback(res, exc)
        if events:
            self._delivered_rev = max(self._delivered_rev, events[-1].revision)
            for q in list(self._subscribers):
                q.put_nowait(events)

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
        key = op.args[0]
        row = conn.execute("SELECT revision, create_revision, value FROM kv WHERE name=?", (key,)).fetchone()
        if op.kind == "create":
            value = op.args[1]
            if row is not None:
                raise KeyExists(key)
            rev = self._append(conn, key, 1, 0, 0, 0, value, None)
            conn.execute("UPDATE log SET create_revision=? WHERE id=?", (rev, rev))
            conn.execute("INSERT INTO kv(name, revision, create_revision, value) VALUES (?,?,?,?)", (key, rev, rev, value))
            events.append(Event("PUT", key, value, rev, rev, None, True))
            return rev
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
        revision = min(revision, self._rev)
        if revision <= self._compact_rev:
            return
        # keep, for each key, its newest row at or before `revision` unless it is a deletion
        conn.execute(
            "DELETE FROM log WHERE id <= ? AND name != '/compact_rev_key' AND ("
            " deleted = 1 OR id < (SELECT MAX(l2.id) FROM log l2 WHERE l2.name = log.name AND l2.id <= ?))",
            (revision, revision),
        )
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
