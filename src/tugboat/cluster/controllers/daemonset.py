"""DaemonSet: one pod per eligible node (nodeSelector, required node affinity, taints the pod
tolerates); pods are pinned with node affinity on ``metadata.name`` and placed by the scheduler;
RollingUpdate replaces old pods up to maxUnavailable at a time."""

from __future__ import annotations

import copy
import json
import logging

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.client.util import hash_obj, pod_active, pod_ready
from tugboat.cluster.controllers.base import Controller, owned_by
from tugboat.cluster.controllers.history import sync_history
from tugboat.cluster.controllers.replicaset import pod_from_template
from tugboat.cluster.scheduler.cache import make_nodeinfo
from tugboat.cluster.scheduler.plugins import node_selector_term_matches, tolerates

log = logging.getLogger(__name__)
REV = "controller-revision-hash"

DS_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def target_node(pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    na = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for t in na.get("nodeSelectorTerms") or []:
        for f in t.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return f["values"][0]
    return None


class DaemonSetController(Controller):
    name = "daemonset"

    def setup(self) -> None:
        self.sets = self.ctx.informer(R.DAEMONSETS)
        self.nodes = self.ctx.informer(R.NODES)
        self.pods = self.ctx.informer(R.PODS)
        self.revisions = self.ctx.informer(R.CONTROLLERREVISIONS)
        self.sets.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(*self.handlers(lambda p: self.enqueue_owner("DaemonSet", p)))
        self.nodes.add_handler(self._all, lambda o, n: self._all(n) if (o.get("spec"), o["metadata"].get("labels")) != (
            n.get("spec"), n["metadata"].get("labels")) else None, self._all)

    def _all(self, _node: dict) -> None:
        for ds in self.sets.list():
            self.enqueue(ds)

    def _eligible(self, ds: dict, node: dict) -> bool:
        spec = (ds["spec"].get("template") or {}).get("spec") or {}
        ni = make_nodeinfo(node)
        for k, v in (spec.get("nodeSelector") or {}).items():
            if ni.labels.get(k) != v:
                return False
        na = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        if na and not any(node_selector_term_matches(t, ni) for t in na.get("nodeSelectorTerms") or []):
            return False
        tols = (spec.get("tolerations") or []) + DS_TOLERATIONS
        return all(tolerates(tols, t) for t in ni.taints if t.get("effect") in ("NoSchedule", "NoExecute"))

    def _rev(self, ds: dict) -> str:
        return hash_obj(json.dumps(ds["spec"].get("template"), sort_keys=True).encode())

    async def sync(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        ds = copy.deepcopy(ds)
        rev = self._rev(ds)
        await sync_history(self.client, self.revisions, ds, f"{ds['metadata']['name']}-{rev}", rev)
        by_node: dict[str, list[dict]] = {}
        for p in owned_by(self.pods, ds):
            if pod_active(p):
                by_node.setdefault(target_node(p) or "", []).append(p)
        nodes = self.nodes.list()
        eligible = {n["metadata"]["name"] for n in nodes if self._eligible(ds, n)}
        for name in sorted(eligible):
            if not by_node.get(name):
                await self._create(ds, name, rev)
        for name, ps in by_node.items():
            if name not in eligible:
                for p in ps:
                    await self._delete(ds, p)
            elif len(ps) > 1:
                for p in sorted(ps, key=lambda p: p["metadata"].get("creationTimestamp", ""))[1:]:
                    await self._delete(ds, p)
        # rolling update
        strat = ds["spec"].get("updateStrategy") or {}
        if strat.get("type", "RollingUpdate") == "RollingUpdate":
            mu = (strat.get("rollingUpdate") or {}).get("maxUnavailable", 1)
            if isinstance(mu, str) and mu.endswith("%"):
                mu = max(1, int(float(mu[:-1]) * len(eligible) / 100))
            cur = [ps[0] for n, ps in by_node.items() if n in eligible and ps]
            unavailable = sum(1 for p in cur if not pod_ready(p)) + sum(1 for n in eligible if not by_node.get(n))
            budget = int(mu) - unavailable
            for p in cur:
                if budget <= 0:
                    break
                if (p["metadata"].get("labels") or {}).get(REV) != rev:
                    await self._delete(ds, p)
                    budget -= 1
        await self._status(ds, eligible, by_node, rev)

    async def _create(self, ds: dict, node: str, rev: str) -> None:
        pod = pod_from_template(ds["spec"].get("template"), ds)
        pod["metadata"]["labels"] = {**pod["metadata"]["labels"], REV: rev}
        spec = pod["spec"]
        aff = spec.setdefault("affinity", {})
        aff["nodeAffinity"] = {**(aff.get("nodeAffinity") or {}), "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}
        have = {(t.get("key"), t.get("effect")) for t in spec.get("tolerations") or []}
        spec["tolerations"] = [*(spec.get("tolerations") or []),
                               *(t for t in DS_TOLERATIONS if (t["key"], t["effect"]) not in have)]
        try:
            created = await self.client.create(R.PODS, pod, ds["metadata"]["namespace"])
            self.recorder.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        except ConflictError:
            pass

    async def _delete(self, ds: dict, pod: dict) -> None:
        try:
            await self.client.delete(R.PODS, pod["metadata"]["name"], pod["metadata"]["namespace"])
            self.recorder.event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        except NotFoundError:
            pass

    async def _status(self, ds: dict, eligible: set[str], by_node: dict[str, list[dict]], rev: str) -> None:
        scheduled = [n for n in eligible if by_node.get(n)]
        pods = [by_node[n][0] for n in scheduled]
        st = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(1 for n, ps in by_node.items() if n not in eligible and ps),
            "numberReady": sum(1 for p in pods if pod_ready(p)),
            "numberAvailable": sum(1 for p in pods if pod_ready(p)),
            "numberUnavailable": len(eligible) - sum(1 for p in pods if pod_ready(p)),
            "updatedNumberScheduled": sum(1 for p in pods if (p["metadata"].get("labels") or {}).get(REV) == rev),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        old = ds.get("status") or {}
        if all(old.get(k, 0) == v for k, v in st.items()):
            return
        ds["status"] = {**old, **st}
        try:
            await self.client.update_status(R.DAEMONSETS, ds)
        except NotFoundError:
            pass
