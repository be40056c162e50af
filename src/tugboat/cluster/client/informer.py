"""Informers: list, then watch from the list's resourceVersion, relist on 410; a local indexed cache.

Handlers run synchronously on the informer's task and must be quick (typically: put a key on a
:class:`~tugboat.cluster.client.workqueue.WorkQueue`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from tugboat.cluster.client.resources import Resource
from tugboat.cluster.client.rest import ApiClient, GoneError, NotFoundError
from tugboat.cluster.client.util import key as obj_key

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
IndexFunc = Callable[[dict], list[str]]


def namespace_index(obj: dict) -> list[str]:
    ns = obj["metadata"].get("namespace")
    return [ns] if ns else []


def owner_uid_index(obj: dict) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid")]


def node_name_index(obj: dict) -> list[str]:
    n = (obj.get("spec") or {}).get("nodeName")
    return [n] if n else []


class Informer:
    def __init__(
        self,
        client: ApiClient,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_seconds: float = 0,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_seconds = resync_seconds
        self.transform = transform
        self.last_error: BaseException | None = None  # of the last failed list or watch (start-up reports)
        self.store: dict[str, dict] = {}
        self._indexers: dict[str, IndexFunc] = {"namespace": namespace_index}
        self._indices: dict[str, dict[str, set[str]]] = {"namespace": {}}
        self._handlers: list[tuple[Handler | None, Handler | None, Handler | None]] = []
        self.synced = asyncio.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self._task: asyncio.Task | None = None

    # ---- configuration
    def add_handler(
        self, on_add: Handler | None = None, on_update: Handler | None = None, on_delete: Handler | None = None
    ) -> None:
        """``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)``. Existing objects are replayed
        as adds when the informer has already synced."""
        self._handlers.append((on_add, on_update, on_delete))
        if self.synced.is_set() and on_add:
            for obj in list(self.store.values()):
                on_add(obj)

    def add_index(self, name: str, fn: IndexFunc) -> None:
        self._indexers[name] = fn
        idx: dict[str, set[str]] = {}
        for k, obj in self.store.items():
            for v in fn(obj):
                idx.setdefault(v, set()).add(k)
        self._indices[name] = idx

    # ---- reads
    def get(self, key: str) -> dict | None:
        return self.store.get(key)

    def get_by(self, namespace: str | None, name: str) -> dict | None:
        return self.store.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            return list(self.store.values())
        return self.by_index("namespace", namespace)

    def by_index(self, name: str, value: str) -> list[dict]:
        keys = self._indices[name].get(value)
        if not keys:
            return []
        return [self.store[k] for k in keys if k in self.store]

    def keys_by_index(self, name: str, value: str) -> set[str]:
        return set(self._indices[name].get(value) or ())

    # ---- store maintenance
    def _index_add(self, k: str, obj: dict) -> None:
        for name, fn in self._indexers.items():
            idx = self._indices[name]
            for v in fn(obj):
                idx.setdefault(v, set()).add(k)

    def _index_remove(self, k: str, obj: dict) -> None:
        for name, fn in self._indexers.items():
            idx = self._indices[name]
            for v in fn(obj):
                s = idx.get(v)
                if s is not None:
                    s.discard(k)
                    if not s:
                        del idx[v]

    def _emit(self, which: int, *args: dict) -> None:
        for h in self._handlers:
            fn = h[which]
            if fn is not None:
                try:
                    fn(*args)
                except Exception:
                    log.exception("informer %s: handler failed", self.resource.plural)

    def _upsert(self, obj: dict) -> None:
        if self.transform:
            obj = self.transform(obj)
        k = obj_key(obj)
        old = self.store.get(k)
        if old is not None:
            self._index_remove(k, old)
        self.store[k] = obj
        self._index_add(k, obj)
        if old is None:
            self._emit(0, obj)
        else:
            self._emit(1, old, obj)

    def _remove(self, obj: dict) -> None:
        k = obj_key(obj)
        old = self.store.pop(k, None)
        if old is not None:
            self._index_remove(k, old)
        self._emit(2, old if old is not None else obj)

    def _replace(self, items: list[dict]) -> None:
        seen = set()
        for obj in items:
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            k = obj_key(obj)
            seen.add(k)
            old = self.store.get(k)
            if old is not None and old["metadata"].get("resourceVersion") == obj["metadata"].get("resourceVersion"):
                continue
            self._upsert(obj)
        for k in [k for k in self.store if k not in seen]:
            self._remove(self.store[k])

    # ---- running
    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"informer-{self.resource.plural}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    async def _list(self) -> None:
        lst = await self.client.list(
            self.resource, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self.relists += 1
        self._replace(lst.get("items") or [])
        self.resource_version = (lst.get("metadata") or {}).get("resourceVersion")
        self.synced.set()

    async def run(self) -> None:
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.resync_seconds if self.resync_seconds else None
                started, events = loop.time(), 0
                async for ev in self.client.watch(
                    self.resource,
                    self.namespace,
                    resource_version=self.resource_version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=random.randint(300, 600),
                ):
                    typ, obj = ev.get("type"), ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if typ in ("ADDED", "MODIFIED"):
                        obj.setdefault("apiVersion", self.resource.api_version)
                        obj.setdefault("kind", self.resource.kind)
                        self._upsert(obj)
                    elif typ == "DELETED":
                        self._remove(obj)
                    backoff = 0.2
                    events += 1
                    if deadline and loop.time() > deadline:
                        for o in list(self.store.values()):
                            self._emit(1, o, o)
                        deadline = loop.time() + self.resync_seconds
                if not events and loop.time() - started < 1.0:
                    # the server keeps closing the watch at once: do not spin
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            except asyncio.CancelledError:
                raise
            except GoneError:
                log.info("informer %s: resourceVersion too old, relisting", self.resource.plural)
                need_list = True
            except NotFoundError:
                # the server does not serve this resource (yet): behave as an empty, synced cache
                if not self.synced.is_set():
                    log.warning("informer %s: resource not served by the API server", self.resource.plural)
                self.synced.set()
                need_list = True
                await asyncio.sleep(30)
            except Exception as exc:
                self.last_error = exc
                log.debug("informer %s: %s; retrying in %.1fs", self.resource.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                # a failed list must be retried; a broken watch resumes from the last resourceVersion
                need_list = need_list or self.resource_version is None


class InformerFactory:
    """One shared informer per (resource, namespace, selectors)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._informers: dict[tuple, Informer] = {}

    def get(self, resource: Resource, namespace: str | None = None, **kw: Any) -> Informer:
        k = (resource, namespace, tuple(sorted(kw.items())))
        inf = self._informers.get(k)
        if inf is None:
            inf = Informer(self.client, resource, namespace, **kw)
            self._informers[k] = inf
        return inf

    def start(self) -> None:
        for inf in self._informers.values():
            inf.start()

    async def wait_synced(self, timeout: float | None = 60) -> None:
        await asyncio.gather(*(i.wait_synced(timeout) for i in self._informers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self._informers.values()))
