"""Recording core/v1 Events (what ``kubectl describe`` shows), with kube's de-duplication:
a repeat of the same (object, type, reason, message) bumps ``count`` and ``lastTimestamp``."""

from __future__ import annotations

import asyncio
import logging
import time

from tugboat.cluster.client.resources import EVENTS
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.client.util import now, now_micro, rand_suffix

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple, tuple[str, str, int, float]] = {}
        self._tasks: set[asyncio.Task] = set()

    def event(self, obj: dict, etype: str, reason: str, message: str) -> None:
        """Fire and forget."""
        try:
            t = asyncio.get_running_loop().create_task(self._record(obj, etype, reason, message))
        except RuntimeError:
            return
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _record(self, obj: dict, etype: str, reason: str, message: str) -> None:
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
            name = f"{md.get('name', 'unknown')}.{rand_suffix(8)}{rand_suffix(8)}"
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

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
