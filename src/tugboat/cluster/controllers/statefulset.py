"""StatefulSet: stable names ``<set>-<ordinal>``, ordered creation (OrderedReady) or Parallel,
PVCs from volumeClaimTemplates (``<template>-<set>-<ordinal>``), scale-down from the highest
ordinal, RollingUpdate (with partition) from the highest ordinal, one pod at a time."""

from __future__ import annotations

import copy
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.client.util import hash_obj, pod_ready
from tugboat.cluster.controllers.base import Controller, owned_by
from tugboat.cluster.controllers.history import sync_history
from tugboat.cluster.controllers.replicaset import pod_from_template

log = logging.getLogger(__name__)
REV = "controller-revision-hash"


def ordinal(sts: dict, pod: dict) -> int:
    name, pname = sts["metadata"]["name"], pod["metadata"]["name"]
    if pname.startswith(name + "-") and pname[len(name) + 1 :].isdigit():
        return int(pname[len(name) + 1 :])
    return -1


def running_ready(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod)


class StatefulSetController(Controller):
    name = "statefulset"

    def setup(self) -> None:
        self.sets = self.ctx.informer(R.STATEFULSETS)
        self.pods = self.ctx.informer(R.PODS)
        self.pvcs = self.ctx.informer(R.PVCS)
        self.revisions = self.ctx.informer(R.CONTROLLERREVISIONS)
        self.sets.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(*self.handlers(lambda p: self.enqueue_owner("StatefulSet", p)))

    def _revision(self, sts: dict) -> str:
        import json

        return f"{sts['metadata']['name']}-{hash_obj(json.dumps(sts['spec'].get('template'), sort_keys=True).encode())}"

    async def _ensure_pvcs(self, sts: dict, i: int) -> list[dict]:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        vols = []
        for t in sts["spec"].get("volumeClaimTemplates") or []:
            tname = t["metadata"]["name"]
            claim = f"{tname}-{name}-{i}"
            vols.append({"name": tname, "persistentVolumeClaim": {"claimName": claim}})
            if self.pvcs.get(f"{ns}/{claim}") is not None:
                continue
            body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": ns,
                                 "labels": {**((sts["spec"].get("selector") or {}).get("matchLabels") or {}),
                                            **(t["metadata"].get("labels") or {})}},
                    "spec": copy.deepcopy(t.get("spec") or {})}
            try:
                await self.client.create(R.PVCS, body, ns)
            except ConflictError:
                pass
        return vols

    async def _create(self, sts: dict, i: int, rev: str) -> None:
        name = sts["metadata"]["name"]
        vols = await self._ensure_pvcs(sts, i)
        pod = pod_from_template(sts["spec"].get("template"), sts, name=f"{name}-{i}")
        pod["metadata"]["labels"] = {**pod["metadata"]["labels"], REV: rev,
                                     "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                                     "apps.kubernetes.io/pod-index": str(i)}
        spec = pod["spec"]
        spec["hostname"] = f"{name}-{i}"
        if sts["spec"].get("serviceName"):
            spec["subdomain"] = sts["spec"]["serviceName"]
        existing = {v.get("name") for v in spec.get("volumes") or []}
        spec["volumes"] = [*(spec.get("volumes") or []), *(v for v in vols if v["name"] not in existing)]
        try:
            await self.client.create(R.PODS, pod, sts["metadata"]["namespace"])
            self.recorder.event(sts, "Normal", "SuccessfulCreate",
                                f"create Pod {name}-{i} in StatefulSet {name} successful")
        except ConflictError:
            pass

    async def _delete(self, sts: dict, pod: dict, why: str = "delete") -> None:
        try:
            await self.client.delete(R.PODS, pod["metadata"]["name"], pod["metadata"]["namespace"],
                                     preconditions={"uid": pod["metadata"]["uid"]})
            self.recorder.event(sts, "Normal", "SuccessfulDelete",
                                f"{why} Pod {pod['metadata']['name']} in StatefulSet {sts['metadata']['name']} successful")
        except (NotFoundError, ConflictError):
            pass

    async def sync(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        sts = copy.deepcopy(sts)
        spec = sts["spec"]
        want = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        rev = self._revision(sts)
        cur = (sts.get("status") or {}).get("currentRevision")
        await sync_history(self.client, self.revisions, sts, rev, rev.rsplit("-", 1)[-1], {cur} if cur else None)
        pods = {ordinal(sts, p): p for p in owned_by(self.pods, sts) if ordinal(sts, p) >= 0}
        # replace failed/succeeded pods
        for p in list(pods.values()):
            if (p.get("status") or {}).get("phase") in ("Failed", "Succeeded") and not p["metadata"].get("deletionTimestamp"):
                await self._delete(sts, p, "delete")
        # scale up, in order
        for i in range(want):
            p = pods.get(i)
            if p is None:
                await self._create(sts, i, rev)
                if not parallel:
                    break
            elif not parallel and (p["metadata"].get("deletionTimestamp") or not running_ready(p)):
                break
        else:
            # scale down from the highest ordinal
            extra = sorted((i for i in pods if i >= want), reverse=True)
            for i in extra:
                p = pods[i]
                if p["metadata"].get("deletionTimestamp"):
                    if not parallel:
                        break
                    continue
                if not parallel and not all(running_ready(pods[j]) for j in range(want) if j in pods):
                    break
                await self._delete(sts, p)
                if not parallel:
                    break
            else:
                await self._rolling(sts, pods, want, rev)
        await self._status(sts, rev)

    async def _rolling(self, sts: dict, pods: dict[int, dict], want: int, rev: str) -> None:
        strategy = sts["spec"].get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        if not all(i in pods and running_ready(pods[i]) and not pods[i]["metadata"].get("deletionTimestamp")
                   for i in range(want)):
            return
        for i in sorted(pods, reverse=True):
            if i < partition or i >= want:
                continue
            if (pods[i]["metadata"].get("labels") or {}).get(REV) != rev:
                await self._delete(sts, pods[i], "delete")
                return

    async def _status(self, sts: dict, rev: str) -> None:
        pods = [p for p in owned_by(self.pods, sts) if ordinal(sts, p) >= 0 and not p["metadata"].get("deletionTimestamp")]
        old = sts.get("status") or {}
        updated = sum(1 for p in pods if (p["metadata"].get("labels") or {}).get(REV) == rev)
        cur_rev = old.get("currentRevision") or rev
        want = int(sts["spec"].get("replicas", 1))
        if updated == len(pods) and updated >= want:
            cur_rev = rev
        current = sum(1 for p in pods if (p["metadata"].get("labels") or {}).get(REV) == cur_rev)
        st = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if pod_ready(p)),
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": cur_rev,
            "updateRevision": rev,
            "collisionCount": int(old.get("collisionCount") or 0),
        }
        if all(old.get(k) == v for k, v in st.items()):
            return
        sts["status"] = {**old, **st}
        try:
            await self.client.update_status(R.STATEFULSETS, sts)
        except NotFoundError:
            pass
