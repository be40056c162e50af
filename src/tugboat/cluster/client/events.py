"""Recording core/v1 Events (what ``kubectl describe`` shows), with kube's de-duplication:
a repeat of the same (object, type, reason, message) bumps ``count`` and ``lastTimestamp``."""

from __future__ import annotations

import asyncio
import logging
import time

from tugboat.cluster.client.resources import EVENTS
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.client.util import now, now_micro

log = logging.getLogger(__name__)


class EventRecorder:
    #: like kube's broadcaster: a bounded backlog (events beyond it are dropped, never blocking the
    #: caller) drained by a few concurrent senders, so that events never crowd out real work
    MAX_BACKLOG = 5000
    SENDERS = 4

    def __init__(self, client: ApiClient, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple, tuple[str, str, int, float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._backlog: asyncio.Queue | None = None
        self.dropped = 0
        self._last_stamp = 0

    def event(self, obj: dict, etype: str, reason: str, message: str, *, at_ns: int | None = None) -> None:
        """Fire and forget. ``at_ns`` (``time.time_ns()``): when it happened, if not now."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._backlog is None:
            self._backlog = asyncio.Queue()
            for _ in range(self.SENDERS):
                t = asyncio.ensure_future(self._sender())
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
        if self._backlog.qsize() >= self.MAX_BACKLOG:
            self.dropped += 1
            return
        # stamped when it happens (senders run concurrently): the name's order is the events' order
        if at_ns is not None:
            stamp = at_ns
        else:
            stamp = max(time.time_ns(), self._last_stamp + 1)
            self._last_stamp = stamp
        self._backlog.put_nowait((obj, etype, reason, message, stamp))

    async def _sender(self) -> None:
        assert self._backlog is not None
        while True:
            item = await self._backlog.get()
            try:
                await self._record(*item)
            finally:
                self._backlog.task_done()

    async def _record(self, obj: dict, etype: str, reason: str, message: str, stamp: int = 0) -> None:
        md = obj.get("metadata") or {}
        ns = md.get("namespace") or "default"
        k = (md.get("uid"), etype, reason, message)
        ts = now()
        prev = self._seen.get(k)
        try:
            if prev is not None and time.monotonic() - prev[3] < 600:
                name, pns, count, _ = prev
                count += 1
                await self.client.patch(EVENTS, name, {"count": count, "lastTimestamp": ts}, pns)
                self._seen[k] = (name, pns, count, time.monotonic())
                return
            # client-go's name: <object>.<unix nanoseconds, hex>, so a list (sorted by name) comes in the
            # order the events happened, which is how `kubectl describe` orders events of the same second
            name = f"{md.get('name', 'unknown')}.{stamp or time.time_ns():x}"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": md.get("name"),
                    "namespace": md.get("namespace"),
                    "uid": md.get("uid"),
                    "resourceVersion": md.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": etype,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "eventTime": None,
                "count": 1,
                "reportingComponent": self.component,
                "reportingInstance": self.host or self.component,
            }
            _ = now_micro
            await self.client.create(EVENTS, body, ns)
            if len(self._seen) > 5000:
                self._seen.clear()
            self._seen[k] = (name, ns, 1, time.monotonic())
        except Exception as exc:
            log.debug("event %s %s: %s", reason, md.get("name"), exc)

    async def flush(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout``), then stop the senders."""
        if self._backlog is not None:
            try:
                await asyncio.wait_for(self._backlog.join(), timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._backlog = None
