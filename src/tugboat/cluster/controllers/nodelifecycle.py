"""Node lifecycle: a node whose heartbeats (kube-node-lease Lease, Ready condition) stop for the
grace period becomes NotReady/Unknown and is tainted ``node.kubernetes.io/unreachable``; pods that
do not tolerate the NoExecute taint are evicted (after their ``tolerationSeconds``); pods bound
to nodes that no longer exist are removed (pod GC)."""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.informer import Informer, node_name_index
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import now, pod_active
from tugboat.cluster.controllers.base import Controller
from tugboat.cluster.scheduler.plugins import tolerates

log = logging.getLogger(__name__)

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    component = "node-controller"
    workers = 1

    def setup(self) -> None:
        self.nodes = self.ctx.informer(R.NODES)
        self.pods = self.ctx.informer(R.PODS)
        self.pods.add_index("node", node_name_index)
        self.leases = Informer(self.client, R.LEASES, "kube-node-lease")
        self._observed: dict[str, tuple[object, float]] = {}  # node -> (heartbeat value, local time seen)
        self._evict_at: dict[str, float] = {}
        self._monitor: asyncio.Task | None = None
        self._registered: set[str] = set()
        self.nodes.add_handler(on_add=self._register,
                               on_delete=lambda n: self._registered.discard(n["metadata"]["name"]))

    def _register(self, node: dict) -> None:
        """kube's node controller: a RegisteredNode event on the Node when it first sees it."""
        name = node["metadata"]["name"]
        if name in self._registered:
            return
        self._registered.add(name)
        self.recorder.event({**node, "kind": "Node", "apiVersion": "v1"}, "Normal", "RegisteredNode",
                            f"Node {name} event: Registered Node {name} in Controller")

    async def on_started(self) -> None:
        self.leases.start()
        await self.leases.wait_synced(60)
        self._monitor = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        await self.leases.stop()
        await super().stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.monitor()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node monitor")
            await asyncio.sleep(self.ctx.options.node_monitor_period)

    def _heartbeat(self, node: dict) -> tuple:
        name = node["metadata"]["name"]
        lease = self.leases.get(f"kube-node-lease/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        ready_hb = None
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                ready_hb = c.get("lastHeartbeatTime")
        return (renew, ready_hb, (lease or {}).get("metadata", {}).get("resourceVersion"))

    async def monitor(self) -> None:
        grace = self.ctx.options.node_monitor_grace_seconds
        t = time.monotonic()
        names = set()
        for node in list(self.nodes.list()):
            name = node["metadata"]["name"]
            names.add(name)
            hb = self._heartbeat(node)
            seen = self._observed.get(name)
            if seen is None or seen[0] != hb:
                self._observed[name] = (hb, t)
                seen = self._observed[name]
            stale = t - seen[1] > grace
            ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
            rstatus = (ready or {}).get("status")
            if stale and rstatus != "Unknown":
                await self._mark_unknown(node)
                continue
            want_taint = UNREACHABLE if (stale or rstatus == "Unknown") else (NOT_READY if rstatus == "False" else None)
            node = await self._ensure_taints(node, want_taint) or node
            await self._ensure_unschedulable_taint(node)
            await self._evict(node)
        for n in list(self._observed):
            if n not in names:
                self._observed.pop(n, None)
        # pod GC: pods bound to nodes that do not exist
        if self.nodes.synced.is_set():
            for pod in list(self.pods.list()):
                n = (pod.get("spec") or {}).get("nodeName")
                if n and n not in names and self.nodes.get(n) is None:
                    md = pod["metadata"]
                    try:
                        await self.client.delete(R.PODS, md["name"], md["namespace"], grace_period=0)
                    except (NotFoundError, ConflictError):
                        pass

    async def _mark_unknown(self, node: dict) -> None:
        name = node["metadata"]["name"]
        new = copy.deepcopy(node)
        t = now()
        for c in new.setdefault("status", {}).setdefault("conditions", []):
            if c.get("status") != "Unknown":
                c["lastTransitionTime"] = t
            c["status"] = "Unknown"
            c["reason"] = "NodeStatusUnknown"
            c["message"] = "Kubelet stopped posting node status."
        try:
            await self.client.update_status(R.NODES, new)
        except ApiError as exc:
            log.debug("node %s status: %s", name, exc)
            return
        self.recorder.event({**node, "kind": "Node", "apiVersion": "v1"}, "Normal", "NodeNotReady",
                            f"Node {name} status is now: NodeNotReady")
        # pods on an unreachable node are no longer ready (endpoints drop them)
        for pod in self.pods.by_index("node", name):
            if not pod_active(pod):
                continue
            conds = [dict(c) for c in (pod.get("status") or {}).get("conditions") or []]
            changed = False
            for c in conds:
                if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != "False":
                    c["status"] = "False"
                    c["lastTransitionTime"] = t
                    changed = True
            if changed:
                try:
                    await self.client.patch(R.PODS, pod["metadata"]["name"], {"status": {"conditions": conds}},
                                            pod["metadata"]["namespace"], subresource="status")
                except ApiError:
                    pass

    async def _ensure_unschedulable_taint(self, node: dict) -> None:
        """kube's TaintNodesByCondition: a cordoned node carries node.kubernetes.io/unschedulable."""
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        has = any(t.get("key") == UNSCHEDULABLE for t in taints)
        want = bool(spec.get("unschedulable"))
        if has == want:
            return
        new = copy.deepcopy(node)
        new.setdefault("spec", {})["taints"] = ([*taints, {"key": UNSCHEDULABLE, "effect": "NoSchedule",
                                                           "timeAdded": now()}] if want else
                                                [t for t in taints if t.get("key") != UNSCHEDULABLE])
        try:
            await self.client.update(R.NODES, new)
        except ApiError as exc:
            log.debug("unschedulable taint %s: %s", node["metadata"]["name"], exc)

    async def _ensure_taints(self, node: dict, want: str | None) -> dict | None:
        taints = list((node.get("spec") or {}).get("taints") or [])
        ours = [x for x in taints if x.get("key") in (UNREACHABLE, NOT_READY)]
        desired = [] if want is None else [{"key": want, "effect": "NoSchedule"},
                                           {"key": want, "effect": "NoExecute", "timeAdded": now()}]
        have = {(x["key"], x.get("effect")) for x in ours}
        if have == {(x["key"], x["effect"]) for x in desired}:
            return None
        keep = [x for x in taints if x.get("key") not in (UNREACHABLE, NOT_READY)]
        new = copy.deepcopy(node)
        new.setdefault("spec", {})["taints"] = keep + desired
        try:
            return await self.client.update(R.NODES, new)
        except ApiError as exc:
            log.debug("taint %s: %s", node["metadata"]["name"], exc)
            return None

    async def _evict(self, node: dict) -> None:
        taints = [x for x in (node.get("spec") or {}).get("taints") or [] if x.get("effect") == "NoExecute"]
        if not taints:
            return
        nowt = time.time()
        from tugboat.cluster.client.util import parse_time

        for pod in self.pods.by_index("node", node["metadata"]["name"]):
            md = pod["metadata"]
            if md.get("deletionTimestamp") or not pod_active(pod):
                continue
            tols = (pod.get("spec") or {}).get("tolerations") or []
            deadline = nowt
            ok = True
            for taint in taints:
                matching = [t for t in tols if tolerates([t], taint)]
                if not matching:
                    ok = False
                    break
                secs = [t.get("tolerationSeconds") for t in matching]
                if all(s is not None for s in secs):
                    added = parse_time(taint.get("timeAdded")) or nowt
                    deadline = max(deadline, added + min(int(s) for s in secs))  # type: ignore[arg-type]
                else:
                    deadline = float("inf")
            if ok and deadline > nowt:
                continue
            try:
                await self.client.delete(R.PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})
                self.recorder.event(pod, "Normal", "TaintManagerEviction",
                                    f"Marking for deletion Pod {md['namespace']}/{md['name']}")
            except (NotFoundError, ConflictError):
                pass

    async def sync(self, key: str) -> None:
        return None
