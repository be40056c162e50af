"""A de-duplicating work queue with rate-limited retries (client-go's workqueue semantics).

* an item queued twice before a worker takes it is processed once;
* an item re-added while a worker processes it is queued again only after ``done``;
* ``add_rate_limited`` retries with per-item exponential back-off; ``forget`` resets it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class ShutDown(Exception):
    pass


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 30.0, name: str = "") -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._shutdown = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Hashable) -> None:
        if self._shutdown or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return
        self._queue.append(item)
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    def add_after(self, item: Hashable, delay: float) -> None:
        if self._shutdown:
            return
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        t = self._timers.get(item)
        if t is not None:
            if t.when() <= when:
                return
            t.cancel()

        def fire() -> None:
            self._timers.pop(item, None)
            self.add(item)

        self._timers[item] = loop.call_at(when, fire)

    def add_rate_limited(self, item: Hashable) -> None:
        n = self._failures.get(item, 0)
        self._failures[item] = n + 1
        self.add_after(item, min(self.base_delay * (2**n), self.max_delay))

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    async def get(self) -> Hashable:
        while not self._queue:
            if self._shutdown:
                raise ShutDown
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and self._queue:
                    # pass the wake-up on to someone else
                    self._wake_one()
                raise
        item = self._queue.popleft()
        self._dirty.discard(item)
        self._processing.add(item)
        return item

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def done(self, item: Hashable) -> None:
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()

    def shutdown(self) -> None:
        self._shutdown = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)


async def run_worker(queue: WorkQueue, sync: Callable[[Any], Awaitable[Any]], *, max_retries: int = 15) -> None:
    """Take items until shut down; a failing ``sync(item)`` is retried with back-off."""
    while True:
        try:
            item = await queue.get()
        except ShutDown:
            return
        try:
            await sync(item)
            queue.forget(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if queue.num_requeues(item) < max_retries:
                log.debug("%s: sync %s failed (%s), retrying", queue.name, item, exc)
                queue.add_rate_limited(item)
            else:
                log.warning("%s: giving up on %s: %s", queue.name, item, exc)
                queue.forget(item)
        finally:
            queue.done(item)
