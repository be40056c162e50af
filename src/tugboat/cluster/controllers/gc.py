"""Garbage collector: deletes objects whose owners are gone, and implements the foreground
(``foregroundDeletion`` finalizer: dependents first) and orphan (``orphan`` finalizer: drop the
owner references) deletion policies."""

from __future__ import annotations

import asyncio
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.informer import Informer
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import key as obj_key
from tugboat.cluster.controllers.base import Controller

log = logging.getLogger(__name__)

KINDS = [R.PODS, R.REPLICASETS, R.DEPLOYMENTS, R.STATEFULSETS, R.DAEMONSETS, R.JOBS, R.CONTROLLERREVISIONS,
         R.ENDPOINTSLICES, R.SERVICES, R.PVCS, R.CONFIGMAPS, R.SECRETS, R.HPAS]


class GarbageCollector(Controller):
    name = "garbagecollector"
    component = "garbage-collector-controller"
    workers = 8

    def setup(self) -> None:
        self.infs: dict[str, Informer] = {}
        self.uids: dict[str, tuple[R.Resource, str]] = {}
        for res in KINDS:
            inf = self.ctx.informer(res)
            self.infs[res.plural] = inf
            inf.add_handler(
                lambda o, res=res: self._changed(res, o),
                lambda old, new, res=res: self._changed(res, new),
                lambda o, res=res: self._deleted(res, o),
            )

    def _changed(self, res: R.Resource, obj: dict) -> None:
        md = obj["metadata"]
        self.uids[md["uid"]] = (res, obj_key(obj))
        if md.get("ownerReferences"):
            self.queue.add(("dep", res.plural, obj_key(obj)))
        if md.get("deletionTimestamp") and set(md.get("finalizers") or ()) & {"foregroundDeletion", "orphan"}:
            self.queue.add(("owner", res.plural, obj_key(obj)))

    def _deleted(self, res: R.Resource, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        self.uids.pop(uid, None)
        for dep in self._dependents(uid):
            self.queue.add(dep)

    def _dependents(self, uid: str) -> list[tuple[str, str, str]]:
        out = []
        for plural, inf in self.infs.items():
            for k in inf.keys_by_index("owner", uid):
                out.append(("dep", plural, k))
        return out

    def _dependent_objs(self, uid: str) -> list[tuple[R.Resource, dict]]:
        out = []
        for inf in self.infs.values():
            for o in inf.by_index("owner", uid):
                out.append((inf.resource, o))
        return out

    async def sync(self, item: tuple[str, str, str]) -> None:  # type: ignore[override]
        what, plural, key = item
        inf = self.infs[plural]
        obj = inf.get(key)
        if obj is None:
            return
        if what == "owner":
            await self._process_owner(inf.resource, obj)
        else:
            await self._process_dependent(inf.resource, obj)

    async def _owner_state(self, ref: dict, namespace: str | None) -> str:
        """'present', 'foreground' (being deleted in foreground) or 'absent' (verified with a GET)."""
        entry = self.uids.get(ref.get("uid", ""))
        if entry is not None:
            res, k = entry
            o = self.infs[res.plural].get(k)
            if o is not None and o["metadata"]["uid"] == ref["uid"]:
                if o["metadata"].get("deletionTimestamp") and "foregroundDeletion" in (o["metadata"].get("finalizers") or []):
                    return "foreground"
                return "present"
        res = R.for_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if res is None:
            return "present"  # unknown kind: never delete on a guess
        try:
            o = await self.client.get(res, ref["name"], namespace if res.namespaced else None)
        except NotFoundError:
            return "absent"
        if o["metadata"].get("uid") != ref.get("uid"):
            return "absent"
        if o["metadata"].get("deletionTimestamp") and "foregroundDeletion" in (o["metadata"].get("finalizers") or []):
            return "foreground"
        return "present"

    async def _process_dependent(self, res: R.Resource, obj: dict) -> None:
        md = obj["metadata"]
        refs = md.get("ownerReferences") or []
        if not refs:
            return
        ns = md.get("namespace")
        states = [await self._owner_state(r, ns) for r in refs]
        if all(s == "absent" for s in states):
            if md.get("deletionTimestamp"):
                return
            log.info("gc: deleting %s %s (owner gone)", res.kind, obj_key(obj))
            try:
                await self.client.delete(res, md["name"], ns, propagation="Background",
                                         preconditions={"uid": md["uid"]})
            except (NotFoundError, ConflictError):
                pass
            return
        if "foreground" in states and not md.get("deletionTimestamp") and all(s != "present" for s in states):
            try:
                await self.client.delete(res, md["name"], ns, propagation="Foreground",
                                         preconditions={"uid": md["uid"]})
            except (NotFoundError, ConflictError):
                pass
            return
        dangling = [r for r, s in zip(refs, states, strict=True) if s == "absent"]
        if dangling:
            keep = [r for r in refs if r not in dangling]
            try:
                await self.client.patch(res, md["name"], {"metadata": {"ownerReferences": keep,
                                                                       "resourceVersion": md["resourceVersion"]}}, ns)
            except (NotFoundError, ConflictError):
                pass

    async def _remove_finalizer(self, res: R.Resource, obj: dict, fin: str) -> None:
        md = obj["metadata"]
        fins = [f for f in md.get("finalizers") or [] if f != fin]
        await self.client.patch(res, md["name"], {"metadata": {"finalizers": fins or None,
                                                               "resourceVersion": md["resourceVersion"]}},
                                md.get("namespace"))

    async def _process_owner(self, res: R.Resource, obj: dict) -> None:
        md = obj["metadata"]
        fins = md.get("finalizers") or []
        uid = md["uid"]
        deps = self._dependent_objs(uid)
        if "orphan" in fins:
            for dres, d in deps:
                dmd = d["metadata"]
                keep = [r for r in dmd.get("ownerReferences") or [] if r.get("uid") != uid]
                try:
                    await self.client.patch(dres, dmd["name"], {"metadata": {"ownerReferences": keep or None}},
                                            dmd.get("namespace"))
                except NotFoundError:
                    pass
            try:
                await self._remove_finalizer(res, obj, "orphan")
            except (NotFoundError, ConflictError):
                pass
            return
        if "foregroundDeletion" in fins:
            blocking = []
            for dres, d in deps:
                dmd = d["metadata"]
                ref = next((r for r in dmd.get("ownerReferences") or [] if r.get("uid") == uid), {})
                if ref.get("blockOwnerDeletion"):
                    blocking.append((dres, d))
                if not dmd.get("deletionTimestamp"):
                    try:
                        await self.client.delete(dres, dmd["name"], dmd.get("namespace"), propagation="Foreground",
                                                 preconditions={"uid": dmd["uid"]})
                    except (NotFoundError, ConflictError):
                        pass
            if not blocking:
                # verify with the API (informers may lag) before letting the owner go
                if await self._any_dependents_live(uid, md.get("namespace")):
                    self.queue.add_after(("owner", res.plural, obj_key(obj)), 0.5)
                    return
                try:
                    await self._remove_finalizer(res, obj, "foregroundDeletion")
                except (NotFoundError, ConflictError):
                    pass
            else:
                self.queue.add_after(("owner", res.plural, obj_key(obj)), 1.0)

    async def _any_dependents_live(self, uid: str, ns: str | None) -> bool:
        async def check(res: R.Resource) -> bool:
            if not res.namespaced and ns:
                return False
            try:
                lst = await self.client.list(res, ns if res.namespaced else None)
            except ApiError:
                return False
            for o in lst.get("items") or []:
                for r in o["metadata"].get("ownerReferences") or []:
                    if r.get("uid") == uid and r.get("blockOwnerDeletion"):
                        return True
            return False

        kinds = {r for r, _ in self._dependent_objs(uid)} or {R.PODS, R.REPLICASETS}
        res = await asyncio.gather(*(check(r) for r in kinds))
        return any(res)

