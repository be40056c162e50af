"""What every controller shares: a context (client, shared informers, event recorder), a work
queue of object keys, workers, and creation/deletion expectations (so a controller does not
act twice on the same gap while its informer catches up)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.events import EventRecorder
from tugboat.cluster.client.informer import Informer, InformerFactory, owner_uid_index
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.client.util import controller_of
from tugboat.cluster.client.util import key as obj_key
from tugboat.cluster.client.workqueue import WorkQueue, run_worker

log = logging.getLogger(__name__)


@dataclass
class Options:
    """Tunables (kube-controller-manager flags); tests shorten the periods."""

    node_monitor_grace_seconds: float = 40.0
    node_monitor_period: float = 5.0
    pod_eviction_default_toleration: float = 300.0
    hpa_sync_period: float = 15.0
    hpa_downscale_window: float | None = None  # override spec.behavior / the 300 s default
    hpa_tolerance: float = 0.1
    local_volume_dir: str = "/var/lib/tugboat/local-volumes"
    cluster_signing_cert_file: str | None = None  # the CA that signs node serving certificates (csrsigning)
    cluster_signing_key_file: str | None = None
    csr_keep_seconds: float = 3600.0  # issued/denied CertificateSigningRequests are deleted after this
    job_backoff_seconds: float = 10.0  # delay before replacing failed Job pods (doubles, capped at 6 min)
    workers: int = 4
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    def __init__(self, client: ApiClient, options: Options | None = None) -> None:
        self.client = client
        self.options = options or Options()
        self.informers = InformerFactory(client)
        self.recorder = EventRecorder(client, "controller-manager")
        self._owner_indexed: set[int] = set()
        self._recorders: dict[str, EventRecorder] = {}

    def recorder_for(self, component: str) -> EventRecorder:
        rec = self._recorders.get(component)
        if rec is None:
            rec = self._recorders[component] = EventRecorder(self.client, component, self.recorder.host)
        return rec

    async def flush_events(self) -> None:
        for r in [self.recorder, *self._recorders.values()]:
            await r.flush()

    def informer(self, res: R.Resource) -> Informer:
        inf = self.informers.get(res)
        if id(inf) not in self._owner_indexed:
            inf.add_index("owner", owner_uid_index)
            self._owner_indexed.add(id(inf))
        return inf


class Expectations:
    """Pending creations/deletions per controller key (kube's ControllerExpectations)."""

    TTL = 60.0

    def __init__(self) -> None:
        self._exp: dict[str, list[float]] = {}

    def expect(self, key: str, adds: int = 0, dels: int = 0) -> None:
        self._exp[key] = [adds, dels, time.monotonic()]

    def raise_(self, key: str, adds: int = 0, dels: int = 0) -> None:
        e = self._exp.setdefault(key, [0, 0, time.monotonic()])
        e[0] += adds
        e[1] += dels

    def observed_add(self, key: str) -> None:
        e = self._exp.get(key)
        if e:
            e[0] -= 1

    def observed_del(self, key: str) -> None:
        e = self._exp.get(key)
        if e:
            e[1] -= 1

    def satisfied(self, key: str) -> bool:
        e = self._exp.get(key)
        if e is None:
            return True
        return bool((e[0] <= 0 and e[1] <= 0) or time.monotonic() - e[2] > self.TTL)

    def forget(self, key: str) -> None:
        self._exp.pop(key, None)


class Controller:
    """Subclasses set ``name``, wire informers in ``setup`` and implement ``sync(key)``."""

    name = "controller"
    component = ""  # events' source.component (kube's names, e.g. "deployment-controller")
    workers = 4

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder_for(self.component or f"{self.name}-controller")
        self.queue = WorkQueue(name=self.name)
        self._tasks: list[asyncio.Task] = []
        self.setup()

    def setup(self) -> None:  # pragma: no cover - overridden
        pass

    async def sync(self, key: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def enqueue(self, obj: dict) -> None:
        self.queue.add(obj_key(obj))

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    def enqueue_owner(self, kind: str, obj: dict) -> None:
        ref = controller_of(obj)
        if ref and ref.get("kind") == kind:
            ns = obj["metadata"].get("namespace")
            self.queue.add(f"{ns}/{ref['name']}" if ns else ref["name"])

    def handlers(self, fn: Callable[[dict], None]) -> tuple[Callable, Callable, Callable]:
        return (fn, lambda old, new: fn(new), fn)

    def start(self) -> None:
        n = self.ctx.options.workers if self.workers == 4 else self.workers
        for _ in range(n):
            self._tasks.append(asyncio.ensure_future(run_worker(self.queue, self._safe_sync)))

    async def _safe_sync(self, key: str) -> None:
        await self.sync(key)

    async def stop(self) -> None:
        self.queue.shutdown()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def owned_by(inf: Informer, owner: dict) -> list[dict]:
    """Objects in ``inf`` whose controller reference is ``owner``."""
    uid = owner["metadata"]["uid"]
    out = []
    for o in inf.by_index("owner", uid):
        ref = controller_of(o)
        if ref and ref.get("uid") == uid:
            out.append(o)
    return out
