"""PersistentVolumeClaim binding and the default StorageClass (``standard``, provisioner
``tugboat.io/local``, WaitForFirstConsumer): a claim binds to a matching Available volume, or the
provisioner creates a local PersistentVolume on the node the scheduler selected
(annotation ``volume.kubernetes.io/selected-node``) under ``<local_volume_dir>/pvc-<uid>``; the node
agent creates and mounts the directory. Released volumes with reclaimPolicy Delete are removed."""

from __future__ import annotations

import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import whole
from tugboat.cluster.controllers.base import Controller

log = logging.getLogger(__name__)

PROVISIONER = "tugboat.io/local"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
SELECTED_NODE = "volume.kubernetes.io/selected-node"


def _req(pvc: dict) -> int:
    return whole(((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "0"))


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"
    component = "persistentvolume-controller"
    workers = 1

    def setup(self) -> None:
        self.pvcs = self.ctx.informer(R.PVCS)
        self.pvs = self.ctx.informer(R.PVS)
        self.classes = self.ctx.informer(R.STORAGECLASSES)
        self.pvcs.add_handler(*self.handlers(self.enqueue))
        self.pvs.add_handler(*self.handlers(lambda pv: self.queue.add("pv:" + pv["metadata"]["name"])))

    async def on_started(self) -> None:
        if not any((c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true" for c in self.classes.list()):
            body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "standard", "annotations": {DEFAULT_CLASS: "true"}},
                    "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"}
            try:
                await self.client.create(R.STORAGECLASSES, body)
            except ConflictError:
                pass
            except ApiError as exc:
                log.warning("default StorageClass: %s", exc)

    def _default_class(self) -> str | None:
        for c in self.classes.list():
            if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true":
                return c["metadata"]["name"]
        return None

    async def sync(self, key: str) -> None:
        if key.startswith("pv:"):
            await self._sync_pv(key[3:])
            return
        pvc = self.pvcs.get(key)
        if pvc is None or pvc["metadata"].get("deletionTimestamp"):
            return
        ns, name = key.split("/", 1)
        spec = pvc.get("spec") or {}
        phase = (pvc.get("status") or {}).get("phase")
        if spec.get("volumeName"):
            pv = self.pvs.get(spec["volumeName"])
            if pv is not None and phase != "Bound":
                await self._finish_bind(pvc, pv)
            return
        scn = spec.get("storageClassName")
        if scn is None:
            scn = self._default_class()
            if scn:
                await self.client.patch(R.PVCS, name, {"spec": {"storageClassName": scn}}, ns)
                return
        # an existing Available volume that fits
        size = _req(pvc)
        modes = set(spec.get("accessModes") or [])
        cands = []
        for pv in self.pvs.list():
            ps = pv.get("spec") or {}
            if (pv.get("status") or {}).get("phase") not in (None, "Available") or ps.get("claimRef"):
                continue
            if (ps.get("storageClassName") or "") != (scn or ""):
                continue
            if not modes <= set(ps.get("accessModes") or []):
                continue
            cap = whole((ps.get("capacity") or {}).get("storage", "0"))
            if cap >= size:
                cands.append((cap, pv))
        if cands:
            cands.sort(key=lambda c: c[0])
            await self._bind(pvc, cands[0][1])
            return
        sc = self.classes.get(scn) if scn else None
        if sc is None or sc.get("provisioner") != PROVISIONER:
            await self._pending(pvc)
            return
        node = (pvc["metadata"].get("annotations") or {}).get(SELECTED_NODE)
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not node:
            await self._pending(pvc, "WaitForFirstConsumer",
                                "waiting for first consumer to be created before binding")
            return
        await self._provision(pvc, sc, node)

    async def _pending(self, pvc: dict, reason: str = "", msg: str = "") -> None:
        if (pvc.get("status") or {}).get("phase") != "Pending":
            new = dict(pvc)
            new["status"] = {**(pvc.get("status") or {}), "phase": "Pending"}
            try:
                await self.client.update_status(R.PVCS, new)
            except ApiError:
                pass
        if reason:
            self.recorder.event(pvc, "Normal", reason, msg)

    async def _provision(self, pvc: dict, sc: dict, node: str | None) -> None:
        uid = pvc["metadata"]["uid"]
        name = f"pvc-{uid}"
        spec = pvc.get("spec") or {}
        path = f"{self.ctx.options.local_volume_dir}/{name}"
        pv = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                           "labels": {"tugboat.io/local-volume": "true"}},
              "spec": {"capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                       "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                       "storageClassName": sc["metadata"]["name"],
                       "volumeMode": spec.get("volumeMode") or "Filesystem",
                       "local": {"path": path},
                       "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": pvc["metadata"]["name"],
                                    "namespace": pvc["metadata"]["namespace"], "uid": uid}}}
        if node:
            pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
        try:
            created = await self.client.create(R.PVS, pv)
        except ConflictError:
            created = await self.client.get(R.PVS, name)
        self.recorder.event(pvc, "Normal", "ProvisioningSucceeded",
                            f"Successfully provisioned volume {name} using {PROVISIONER}")
        await self._bind(pvc, created)

    async def _bind(self, pvc: dict, pv: dict) -> None:
        md = pvc["metadata"]
        if not (pv.get("spec") or {}).get("claimRef"):
            new = dict(pv)
            new["spec"] = {**pv["spec"], "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                                      "name": md["name"], "namespace": md["namespace"], "uid": md["uid"]}}
            pv = await self.client.update(R.PVS, new)
        pvc = await self.client.patch(R.PVCS, md["name"], {"spec": {"volumeName": pv["metadata"]["name"]},
                                                           "metadata": {"annotations": {
                                                               "pv.kubernetes.io/bind-completed": "yes"}}},
                                      md["namespace"])
        await self._finish_bind(pvc, pv)

    async def _finish_bind(self, pvc: dict, pv: dict) -> None:
        if (pv.get("status") or {}).get("phase") != "Bound":
            new = dict(pv)
            new["status"] = {"phase": "Bound"}
            try:
                await self.client.update_status(R.PVS, new)
            except ApiError as exc:
                log.debug("pv status: %s", exc)
        ps = pv.get("spec") or {}
        new = dict(pvc)
        new["status"] = {"phase": "Bound", "accessModes": ps.get("accessModes") or [],
                         "capacity": ps.get("capacity") or {}}
        try:
            await self.client.update_status(R.PVCS, new)
        except ConflictError:
            self.queue.add_after(f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}", 0.2)

    async def _sync_pv(self, name: str) -> None:
        pv = self.pvs.get(name)
        if pv is None:
            return
        ref = (pv.get("spec") or {}).get("claimRef")
        phase = (pv.get("status") or {}).get("phase")
        if not ref:
            if phase not in ("Available",):
                new = dict(pv)
                new["status"] = {"phase": "Available"}
                try:
                    await self.client.update_status(R.PVS, new)
                except ApiError:
                    pass
            return
        claim = self.pvcs.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is not None and claim["metadata"].get("uid") == ref.get("uid"):
            if phase != "Bound" and (claim.get("spec") or {}).get("volumeName") == name:
                self.queue.add(f"{ref.get('namespace')}/{ref.get('name')}")
            return
        if ref.get("uid") is None:
            return
        # claim gone: Released, then reclaim
        try:
            await self.client.get(R.PVCS, ref["name"], ref["namespace"])
            return
        except NotFoundError:
            pass
        policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Delete":
            try:
                await self.client.delete(R.PVS, name)
            except NotFoundError:
                pass
        elif phase != "Released":
            new = dict(pv)
            new["status"] = {"phase": "Released"}
            try:
                await self.client.update_status(R.PVS, new)
            except ApiError:
                pass
