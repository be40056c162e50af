"""The watch cache: one store watch fanned out to every API watcher.

A single task follows ``store.watch("/registry/", rev)``, decodes each event once, keeps the last
``capacity`` events in a ring (for watches that resume from a resourceVersion) and pushes each
event to the watchers registered under a matching key prefix (indexed by prefix, so an event
visits only the watchers of its resource). A watcher with a sink (every HTTP watch) gets it
synchronously; the sinks share the event's ``encoded`` memo, so the selector verdict and the
encoded chunk are computed once per (version, selectors), not per watcher. A watcher that falls more than
``max_pending`` events behind is closed (its client re-watches), so one slow client never holds the
others back. Resuming from a revision older than the ring's start answers 410 Expired.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from tugboat.cluster.apiserver.storage.base import Compacted, Event, Store

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode


class CachedEvent:
    """One change, decoded lazily (most events of a write-heavy load are never watched)."""

    __slots__ = ("_obj", "_prev", "encoded", "key", "prev_value", "revision", "type", "value")

    def __init__(self, type: str, key: str, revision: int, value: bytes, prev_value: bytes | None) -> None:
        self.type = type  # ADDED MODIFIED DELETED
        self.key = key
        self.revision = revision
        self.value = value
        self.prev_value = prev_value
        self._obj: dict[str, Any] | None = None
        self._prev: dict[str, Any] | None = None
        self.encoded: dict[Any, Any] = {}  # per-view encodings (and selector verdicts), built once

    @property
    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = _with_rv(self.value, self.revision)
        return self._obj

    @property
    def prev(self) -> dict[str, Any] | None:
        if self._prev is None and self.prev_value:
            self._prev = _decode(self.prev_value)
        return self._prev


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


Sink = Callable[[CachedEvent], bool]


class Watcher:
    """One watch. With a ``sink`` (the API server's watch handler) each event is handed over
    synchronously as it is ingested (no task switch per watcher; the sink writes to the socket and
    returns False when the client is gone or too far behind); without one, events queue up."""

    def __init__(self, cache: WatchCache, prefix: str, max_pending: int, after: int = 0,
                 sink: Sink | None = None) -> None:
        self.cache = cache
        self.after = after
        self.prefix = prefix
        self.sink = sink
        self.queue: asyncio.Queue[CachedEvent | None] = asyncio.Queue()
        self.done = asyncio.Event()
        self.max_pending = max_pending
        self.closed = False
        self.last_rev = after

    def push(self, ev: CachedEvent) -> None:
        if self.closed or ev.revision <= self.after:
            return
        self.last_rev = ev.revision
        if self.sink is not None:
            try:
                ok = self.sink(ev)
            except Exception:
                log.exception("watch sink failed")
                ok = False
            if not ok:
                self.close()
            return
        if self.queue.qsize() >= self.max_pending:
            self.close()
            return
        self.queue.put_nowait(ev)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            self.done.set()
            self.cache.watchers.discard(self)
            ws = self.cache.by_prefix.get(self.prefix)
            if ws is not None:
                ws.pop(self, None)
                if not ws:
                    del self.cache.by_prefix[self.prefix]


def _with_rv(value: bytes, rev: int) -> dict[str, Any]:
    obj = _decode(value)
    md = obj.setdefault("metadata", {})
    md["resourceVersion"] = str(rev)
    return obj


class WatchCache:
    def __init__(self, store: Store, capacity: int = 10000, max_pending: int = 10000) -> None:
        self.store = store
        self.capacity = capacity
        self.max_pending = max_pending
        self.ring: collections.deque[CachedEvent] = collections.deque()
        self.start_rev = 0  # events with revision > start_rev are all known (in the ring or newer)
        self.rev = 0  # last revision seen
        self.watchers: set[Watcher] = set()
        # the same watchers by key prefix (insertion-ordered), so an event visits only the watchers
        # of its resource instead of testing every watcher's prefix
        self.by_prefix: dict[str, dict[Watcher, None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._rev_waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def start(self) -> None:
        self.rev = self.start_rev = await self.store.current_revision()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for w in list(self.watchers):
            w.close()

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.store.watch("/registry/", self.rev):
                    self._ingest(ev)
            except asyncio.CancelledError:
                raise
            except Compacted as exc:
                log.warning("watch cache fell behind compaction: %s; restarting at the current revision", exc)
                self.ring.clear()
                self.rev = self.start_rev = await self.store.current_revision()
                for w in list(self.watchers):
                    w.close()
            except Exception:
                log.exception("watch cache: store watch failed; retrying")
                await asyncio.sleep(0.5)

    def _ingest(self, ev: Event) -> None:
        if ev.revision <= self.rev:
            return
        if ev.type == "DELETE":
            ce = CachedEvent("DELETED", ev.key, ev.revision, ev.value, None)
        else:
            typ = "ADDED" if ev.created or not ev.prev_value else "MODIFIED"
            ce = CachedEvent(typ, ev.key, ev.revision, ev.value, ev.prev_value)
        self.ring.append(ce)
        if len(self.ring) > self.capacity:
            old = self.ring.popleft()
            self.start_rev = old.revision
        self.rev = ev.revision
        key = ev.key
        for prefix, ws in list(self.by_prefix.items()):
            if key.startswith(prefix):
                for w in list(ws):
                    w.push(ce)
        # the ring keeps bytes only: decoded objects are large, and replays are rare
        ce._obj = ce._prev = None
        ce.encoded = {}
        if self._rev_waiters:
            keep = []
            for r, fut in self._rev_waiters:
                if r <= self.rev:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((r, fut))
            self._rev_waiters = keep

    async def wait_for(self, rev: int, timeout: float = 3.0) -> None:
        """Wait until the cache has seen revision ``rev`` (used after writes that want fresh watches)."""
        if self.rev >= rev:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rev_waiters.append((rev, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)

    def watch(self, prefix: str, after_rev: int, sink: Sink | None = None) -> Watcher:
        """Events under ``prefix`` newer than ``after_rev``: buffered ones first, then live ones."""
        if after_rev < self.start_rev:
            raise TooOld(after_rev, self.start_rev + 1)
        w = Watcher(self, prefix, self.max_pending, after_rev, sink)
        if after_rev < self.rev:
            for ce in self.ring:
                if ce.revision > after_rev and ce.key.startswith(prefix):
                    w.push(ce)
                    ce._obj = ce._prev = None  # the ring keeps bytes only (see _ingest)
                    ce.encoded = {}
        if not w.closed:
            self.watchers.add(w)
            self.by_prefix.setdefault(prefix, {})[w] = None
        return w
