"""Disruption: keeps PodDisruptionBudget status (expectedPods, desiredHealthy, currentHealthy,
disruptionsAllowed, the DisruptionAllowed condition) from the pods the budget selects, as kube's
disruption controller does. The API server's eviction subresource reads that status and
decrements ``disruptionsAllowed`` (recording the pod in ``status.disruptedPods``) before it
deletes; pods listed there count as unhealthy until they are gone or two minutes pass."""

from __future__ import annotations

import copy
import logging
import math
import re
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.client.util import controller_of, match_labels, parse_time, pod_ready
from tugboat.cluster.controllers.base import Controller

log = logging.getLogger(__name__)

PDBS = R.PODDISRUPTIONBUDGETS
DELETION_TIMEOUT = 120.0  # kube's DeletionTimeout for disruptedPods entries


def scaled(value: int | str, total: int, round_up: bool = True) -> int:
    """An int-or-percent against ``total`` (kube's GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)%", str(value))
    if not m:
        if str(value).isdigit():
            return int(value)
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    v = int(m.group(1)) * total / 100
    return math.ceil(v) if round_up else math.floor(v)


class DisruptionController(Controller):
    name = "disruption"
    component = "controllermanager"

    def setup(self) -> None:
        self.pdbs = self.ctx.informer(PDBS)
        self.pods = self.ctx.informer(R.PODS)
        self.rss = self.ctx.informer(R.REPLICASETS)
        self.deps = self.ctx.informer(R.DEPLOYMENTS)
        self.sets = self.ctx.informer(R.STATEFULSETS)
        self.pdbs.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(self._pod_event, lambda old, new: (self._pod_event(old), self._pod_event(new)),
                              self._pod_event)
        for inf in (self.rss, self.deps, self.sets):
            inf.add_handler(*self.handlers(self._controller_event))

    def _pod_event(self, pod: dict) -> None:
        ns = pod["metadata"].get("namespace")
        labels = pod["metadata"].get("labels") or {}
        for pdb in self.pdbs.list(ns):
            if match_labels((pdb.get("spec") or {}).get("selector"), labels):
                self.enqueue(pdb)

    def _controller_event(self, obj: dict) -> None:
        for pdb in self.pdbs.list(obj["metadata"].get("namespace")):
            self.enqueue(pdb)

    def _scale_of(self, pod: dict) -> tuple[str, int] | None:
        """(uid, replicas) of the pod's scalable controller: Deployment (through its ReplicaSet),
        ReplicaSet or StatefulSet."""
        ref = controller_of(pod)
        ns = pod["metadata"].get("namespace")
        if ref is None:
            return None
        if ref.get("kind") == "ReplicaSet":
            rs = self.rss.get(f"{ns}/{ref['name']}")
            if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
                return None
            dref = controller_of(rs)
            if dref is not None and dref.get("kind") == "Deployment":
                dep = self.deps.get(f"{ns}/{dref['name']}")
                if dep is not None and dep["metadata"].get("uid") == dref.get("uid"):
                    return dep["metadata"]["uid"], int((dep.get("spec") or {}).get("replicas", 1))
                return None
            return rs["metadata"]["uid"], int((rs.get("spec") or {}).get("replicas", 1))
        if ref.get("kind") == "StatefulSet":
            sts = self.sets.get(f"{ns}/{ref['name']}")
            if sts is None or sts["metadata"].get("uid") != ref.get("uid"):
                return None
            return sts["metadata"]["uid"], int((sts.get("spec") or {}).get("replicas", 1))
        return None

    def _expected(self, pdb: dict, pods: list[dict]) -> tuple[int, int]:
        """-> (expectedPods, desiredHealthy)."""
        spec = pdb.get("spec") or {}
        mn, mx = spec.get("minAvailable"), spec.get("maxUnavailable")
        if mn is not None and (isinstance(mn, int) or str(mn).isdigit()):
            return len(pods), int(mn)
        if mn is None and mx is None:
            return len(pods), 0
        scales: dict[str, int] = {}
        for p in pods:
            s = self._scale_of(p)
            if s is None:
                raise ValueError(f"found no controllers for pod {p['metadata']['name']!r}")
            scales[s[0]] = s[1]
        expected = sum(scales.values())
        if mx is not None:
            return expected, max(0, expected - scaled(mx, expected))
        return expected, scaled(mn, expected)

    async def sync(self, key: str) -> None:
        cached = self.pdbs.get(key)
        if cached is None or cached["metadata"].get("deletionTimestamp"):
            return
        pdb = copy.deepcopy(cached)
        ns = pdb["metadata"]["namespace"]
        sel = (pdb.get("spec") or {}).get("selector")
        pods = [p for p in self.pods.list(ns) if match_labels(sel, p["metadata"].get("labels"))]
        old = pdb.get("status") or {}
        now = time.time()
        live = {p["metadata"]["name"]: p for p in pods}
        disrupted: dict[str, str] = {}
        next_check: float | None = None
        for name, ts in (old.get("disruptedPods") or {}).items():
            p = live.get(name)
            if p is None or p["metadata"].get("deletionTimestamp"):
                continue  # the eviction went through
            expires = parse_time(ts) + DELETION_TIMEOUT
            if expires > now:
                disrupted[name] = ts
                next_check = expires if next_check is None else min(next_check, expires)
        healthy = sum(1 for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted)
        st: dict = {"observedGeneration": pdb["metadata"].get("generation", 1), "currentHealthy": healthy}
        try:
            expected, desired = self._expected(pdb, pods)
        except ValueError as exc:
            st.update({"desiredHealthy": 0, "expectedPods": 0, "disruptionsAllowed": 0})
            reason, status, message = "SyncFailed", "False", str(exc)
            self.enqueue_after(key, 5.0)
        else:
            allowed = max(0, healthy - desired) if expected > 0 else 0
            st.update({"desiredHealthy": desired, "expectedPods": expected, "disruptionsAllowed": allowed})
            reason, status, message = ("SufficientPods", "True", "") if allowed > 0 else \
                ("InsufficientPods", "False", "")
        if disrupted:
            st["disruptedPods"] = disrupted
        cond = {"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
                "observedGeneration": st["observedGeneration"]}
        old_cond = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
        if old_cond is not None and old_cond.get("status") == status:
            cond["lastTransitionTime"] = old_cond.get("lastTransitionTime")
        else:
            cond["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        st["conditions"] = [cond]
        if next_check is not None:
            self.enqueue_after(key, max(0.5, next_check - now))
        cmp_old = {k: old.get(k) for k in st}
        if cmp_old == st and bool(old.get("disruptedPods")) == bool(disrupted):
            return
        pdb["status"] = st
        try:
            await self.client.update_status(PDBS, pdb)
        except ConflictError:
            self.queue.add_rate_limited(key)
        except NotFoundError:
            pass
