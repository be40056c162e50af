"""The scheduler: watches unassigned pods, filters and scores nodes, binds through pods/binding.

Hot path: one scheduling decision is pure in-memory work on :class:`Cache`; the pod is *assumed*
onto its node right away and the binding request runs concurrently (bounded), so the loop never
waits for the API server. Unschedulable pods get the PodScheduled=False condition and a
FailedScheduling event, and go back to the active queue when the cluster changes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from typing import Any

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.events import EventRecorder
from tugboat.cluster.client.informer import Informer
from tugboat.cluster.client.rest import ApiClient, ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import match_labels, now
from tugboat.cluster.scheduler import plugins as P
from tugboat.cluster.scheduler.cache import DEFAULT_MEMORY, DEFAULT_MILLI_CPU, Cache, PodInfo, pod_priority

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
WEIGHTS = {"fit": 1, "balanced": 1, "taint": 3, "affinity": 2, "interpod": 2, "spread": 2, "image": 1}


def is_unassigned(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
        and not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class SchedulingQueue:
    """Active heap ordered by (-priority, arrival); an unschedulable pool flushed on cluster events."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._active: set[str] = set()
        self.unschedulable: dict[str, float] = {}
        self._backoff: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._seq = itertools.count()
        self._event = asyncio.Event()
        self.prio: dict[str, int] = {}

    def add(self, key: str, priority: int = 0) -> None:
        self.prio[key] = priority
        self.unschedulable.pop(key, None)
        t = self._timers.pop(key, None)
        if t:
            t.cancel()
        if key in self._active:
            return
        self._active.add(key)
        heapq.heappush(self._heap, (-priority, next(self._seq), key))
        self._event.set()

    def add_backoff(self, key: str) -> None:
        n = self._backoff.get(key, 0)
        self._backoff[key] = n + 1
        delay = min(1.0 * (2**n), 10.0)
        if key in self._timers or key in self._active:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if key in self.prio:
            self.add(key, self.prio[key])

    def mark_unschedulable(self, key: str) -> None:
        self.unschedulable[key] = time.monotonic()

    def move_all_to_active(self) -> None:
        if not self.unschedulable:
            return
        for key in list(self.unschedulable):
            self.unschedulable.pop(key, None)
            # a short back-off keeps event storms from spinning the loop
            self.add_backoff_short(key)

    def add_backoff_short(self, key: str) -> None:
        if key in self._timers or key in self._active:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(0.05 + random.random() * 0.1, self._fire, key)

    def forget(self, key: str) -> None:
        self.prio.pop(key, None)
        self._backoff.pop(key, None)
        self.unschedulable.pop(key, None)
        self._active.discard(key)
        t = self._timers.pop(key, None)
        if t:
            t.cancel()

    def succeeded(self, key: str) -> None:
        self._backoff.pop(key, None)

    def pop_nowait(self) -> str | None:
        while self._heap:
            _, _, key = heapq.heappop(self._heap)
            if key in self._active:
                self._active.discard(key)
                return key
        self._event.clear()
        return None

    async def pop(self) -> str:
        while True:
            k = self.pop_nowait()
            if k is not None:
                return k
            await self._event.wait()

    def __len__(self) -> int:
        return len(self._active)


class Scheduler:
    def __init__(self, client: ApiClient, *, bind_concurrency: int = 64, percentage_of_nodes_to_score: int = 0) -> None:
        self.client = client
        self.cache = Cache()
        self.queue = SchedulingQueue()
        self.recorder = EventRecorder(client, SCHEDULER_NAME)
        self.pods = Informer(client, R.PODS)
        self.nodes = Informer(client, R.NODES)
        self.pvcs = Informer(client, R.PVCS)
        self.pvs = Informer(client, R.PVS)
        self.storageclasses = Informer(client, R.STORAGECLASSES)
        self.priorityclasses = Informer(client, R.PRIORITYCLASSES)
        self.pdbs = Informer(client, R.PODDISRUPTIONBUDGETS)
        self.pending: dict[str, dict] = {}  # unassigned pods by key
        self.bind_sem = asyncio.Semaphore(bind_concurrency)
        self.percentage = percentage_of_nodes_to_score
        self._next_start = 0
        self._binds: set[asyncio.Task] = set()
        self.scheduled = 0
        self.failed_attempts = 0
        self.bind_latencies: list[float] = []
        self.bound_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._wire()

    # ---- informer wiring
    def _wire(self) -> None:
        self.nodes.add_handler(self._node_add, self._node_update, self._node_delete)
        self.pods.add_handler(self._pod_add, self._pod_update, self._pod_delete)
        self.pvcs.add_handler(lambda o: self.queue.move_all_to_active(), lambda a, b: self.queue.move_all_to_active())
        self.pvs.add_handler(lambda o: self.queue.move_all_to_active(), lambda a, b: self.queue.move_all_to_active())

    def _node_add(self, node: dict) -> None:
        self.cache.set_node(node)
        self.queue.move_all_to_active()

    def _node_update(self, old: dict, new: dict) -> None:
        self.cache.set_node(new)
        if (old.get("spec") != new.get("spec") or old["metadata"].get("labels") != new["metadata"].get("labels")
                or (old.get("status") or {}).get("allocatable") != (new.get("status") or {}).get("allocatable")):
            self.queue.move_all_to_active()

    def _node_delete(self, node: dict) -> None:
        self.cache.remove_node(node["metadata"]["name"])

    def _pod_key(self, pod: dict) -> str:
        return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"

    def _priority(self, pod: dict) -> int:
        spec = pod.get("spec") or {}
        if spec.get("priority") is not None:
            return int(spec["priority"])
        pcn = spec.get("priorityClassName")
        if pcn:
            pc = self.priorityclasses.get(pcn)
            if pc is not None:
                return int(pc.get("value") or 0)
        return 0

    def _pod_add(self, pod: dict) -> None:
        key = self._pod_key(pod)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            if is_terminal(pod):
                self.cache.remove_pod(key)
            else:
                self.cache.add_pod(pod, node)
            self.pending.pop(key, None)
            self.queue.forget(key)
        elif is_unassigned(pod):
            self.pending[key] = pod
            if key in self.cache.assumed:
                return  # binding in flight
            if key not in self.queue.unschedulable:
                self.queue.add(key, self._priority(pod))

    def _pod_update(self, old: dict, new: dict) -> None:
        key = self._pod_key(new)
        if (new.get("spec") or {}).get("nodeName"):
            self._pod_add(new)
            if is_terminal(new) and not is_terminal(old):
                self.queue.move_all_to_active()
            return
        if not is_unassigned(new):
            self.pending.pop(key, None)
            self.queue.forget(key)
            return
        self.pending[key] = new
        if (old.get("spec") != new.get("spec") or old["metadata"].get("labels") != new["metadata"].get("labels")):
            self.queue.add(key, self._priority(new))

    def _pod_delete(self, pod: dict) -> None:
        key = self._pod_key(pod)
        self.pending.pop(key, None)
        self.queue.forget(key)
        if key in self.cache.pods:
            self.cache.remove_pod(key)
            self.queue.move_all_to_active()
        for ni in self.cache.node_list:
            if ni.nominated:
                ni.nominated.pop(key, None)

    # ---- running
    async def start(self) -> None:
        for inf in (self.pdbs, self.priorityclasses, self.storageclasses, self.pvs, self.pvcs, self.nodes, self.pods):
            inf.start()
        for inf in (self.pdbs, self.priorityclasses, self.storageclasses, self.pvs, self.pvcs, self.nodes, self.pods):
            await inf.wait_synced(120)

    async def run(self) -> None:
        await self.start()
        flusher = asyncio.ensure_future(self._flush_loop())
        try:
            while True:
                key = await self.queue.pop()
                self.schedule_one(key)
                # let informers and binds make progress every now and then
                if self.scheduled % 32 == 0:
                    await asyncio.sleep(0)
        finally:
            flusher.cancel()
            await self.stop()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.queue.move_all_to_active()

    async def stop(self) -> None:
        for t in list(self._binds):
            t.cancel()
        for inf in (self.pods, self.nodes, self.pvcs, self.pvs, self.storageclasses, self.priorityclasses, self.pdbs):
            await inf.stop()
        await self.recorder.flush(1.0)

    # ---- one decision
    def _num_to_find(self, n: int) -> int:
        if n < 100:
            return n
        pct = self.percentage or max(5, 50 - n // 125)
        return max(100, n * pct // 100)

    def _volumes(self, st: P.PodState) -> None:
        vols = (st.pod.get("spec") or {}).get("volumes") or []
        terms: list[list[dict]] = []
        for v in vols:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.pvcs.get_by(st.namespace, claim)
            if pvc is None:
                st.pvc_error = f'persistentvolumeclaim "{claim}" not found'
                return
            vn = (pvc.get("spec") or {}).get("volumeName")
            if vn:
                pv = self.pvs.get(vn)
                req = (((pv or {}).get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
                if req.get("nodeSelectorTerms"):
                    terms.append(req["nodeSelectorTerms"])
            else:
                scn = (pvc.get("spec") or {}).get("storageClassName")
                sc = self.storageclasses.get(scn) if scn else None
                if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                    st.pvc_error = "pod has unbound immediate PersistentVolumeClaims"
                    return
        st.pvc_terms = terms or None

    def schedule_one(self, key: str) -> None:
        pod = self.pending.get(key)
        if pod is None or not is_unassigned(pod):
            return
        if self.pods.get(key) is not pod and self.pods.get(key) is not None:
            pod = self.pods.get(key)
        st = P.prepare(pod, self.cache)
        st.priority = self._priority(pod)
        if (pod.get("spec") or {}).get("volumes"):
            self._volumes(st)
        nodes = self.cache.node_list
        n = len(nodes)
        if n == 0:
            self._unschedulable(pod, st, "0/0 nodes are available: no nodes available to schedule pods.", {})
            return
        if st.pvc_error:
            self._unschedulable(pod, st, f"0/{n} nodes are available: {st.pvc_error}.", {})
            return
        want = self._num_to_find(n)
        feasible = []
        reasons: dict[str, list[str]] = {}
        start = self._next_start % n
        checked = 0
        simple = P.is_simple(st)
        cpu, mem = st.req.cpu, st.req.mem
        order = nodes[start:] + nodes[:start] if start else nodes
        if P.fast_path_ok(st) and not self.cache.tainted and not self.cache.imaged:
            best = self._fast_select(st, order, want)
            if best is not None:
                self._next_start = (start + best[1]) % n
                self._assume_and_bind(pod, key, best[0].name)
                return
        for ni in order:
            checked += 1
            if simple and ni.plain and not ni.nominated:
                # fast path (no taints, selectors, ports, affinity, spread, volumes): resources only
                a, r = ni.alloc, ni.requested
                if r.pods < a.pods and r.cpu + cpu <= a.cpu and r.mem + mem <= a.mem:
                    feasible.append(ni)
                    if len(feasible) >= want:
                        break
                    continue
            rs = P.filter_node(st, ni)
            if rs is None:
                feasible.append(ni)
                if len(feasible) >= want:
                    break
            else:
                reasons[ni.name] = rs
        self._next_start = (start + checked) % n
        if not feasible:
            msg = fit_error_message(n, reasons)
            if self._preempt(pod, st, reasons, msg):
                return
            msg += " " + preemption_message(n, reasons, st.priority > 0)
            self._unschedulable(pod, st, msg, reasons)
            return
        best = self._select(st, feasible)
        self._assume_and_bind(pod, key, best.name)

    def _fast_select(self, st: P.PodState, order: list, want: int) -> tuple[Any, int] | None:
        """Filter and score (least allocated + balanced) in one pass for pods whose only
        constraints are resources and required pod (anti-)affinity, on untainted clusters: the
        common case. Returns None when no node fits (the full path then collects the reasons)."""
        cpu, mem = st.req.cpu, st.req.mem
        ncpu = cpu or DEFAULT_MILLI_CPU
        nmem = mem or DEFAULT_MEMORY
        avoid = st.anti_domains + st.existing_anti_domains
        need = st.affinity_domains
        best_score = -1.0
        best: list = []
        found = 0
        checked = 0
        for ni in order:
            checked += 1
            a = ni.alloc
            ac, am = a.cpu, a.mem
            if ni.plain and not ni.nominated:
                r = ni.requested
                if not (r.pods < a.pods and r.cpu + cpu <= ac and r.mem + mem <= am):
                    continue
                if avoid or need:
                    labels = ni.labels
                    bad = False
                    for tk, doms in avoid:
                        v = labels.get(tk)
                        if v is not None and v in doms:
                            bad = True
                            break
                    if not bad:
                        for tk, doms in need:
                            v = labels.get(tk)
                            if v is None or (doms is not None and v not in doms):
                                bad = True
                                break
                    if bad:
                        continue
            elif P.filter_node(st, ni) is not None:
                continue
            if ac <= 0 or am <= 0:
                continue
            fc = (ni.nonzero_cpu + ncpu) / ac
            fm = (ni.nonzero_mem + nmem) / am
            if fc > 1.0:
                fc = 1.0
            if fm > 1.0:
                fm = 1.0
            d = fc - fm
            score = (2.0 - fc - fm) * 50 + (1.0 - (d if d > 0 else -d) / 2) * 100
            if score > best_score + 1e-9:
                best_score = score
                best = [ni]
            elif score >= best_score - 1e-9:
                best.append(ni)
            found += 1
            if found >= want:
                break
        if not best:
            return None
        return (best[0] if len(best) == 1 else random.choice(best)), checked

    def _select(self, st: P.PodState, feasible: list) -> Any:
        if len(feasible) == 1:
            return feasible[0]
        total = P.score_resources_all(st, feasible)
        if st.preferred_terms:
            for i, v in enumerate(P.normalize([P.score_node_affinity(st, ni) for ni in feasible])):
                total[i] += v * WEIGHTS["affinity"]
        if self.cache.tainted:
            for i, v in enumerate(P.normalize([P.score_taints(st, ni) for ni in feasible], reverse=True)):
                total[i] += v * WEIGHTS["taint"]
        if st.pref_counts:
            for i, v in enumerate(P.normalize([P.score_interpod(st, ni) for ni in feasible])):
                total[i] += v * WEIGHTS["interpod"]
        if st.spread_counts:
            for i, v in enumerate(P.normalize([P.score_spread(st, ni) for ni in feasible], reverse=True)):
                total[i] += v * WEIGHTS["spread"]
        if self.cache.imaged:
            holders = {img: sum(1 for ni in feasible if img in ni.images) for img in st.images}
            spread = {img: c / len(feasible) for img, c in holders.items()}
            for i, ni in enumerate(feasible):
                total[i] += P.score_images(st, ni, spread) * WEIGHTS["image"]
        best = max(total)
        ties = [ni for ni, s in zip(feasible, total, strict=True) if s >= best - 1e-9]
        return ties[0] if len(ties) == 1 else random.choice(ties)

    def _assume_and_bind(self, pod: dict, key: str, node: str) -> None:
        self.cache.assume(pod, node)
        for ni in self.cache.node_list:
            if ni.nominated:
                ni.nominated.pop(key, None)
        self.scheduled += 1
        self.queue.succeeded(key)
        t = asyncio.ensure_future(self._bind(pod, key, node))
        self._binds.add(t)
        t.add_done_callback(self._binds.discard)

    async def _bind(self, pod: dict, key: str, node: str) -> None:
        md = pod["metadata"]
        async with self.bind_sem:
            try:
                await self._select_volume_nodes(pod, node)
                # the event is named after the moment of the bind, before the node can see the pod,
                # so that `kubectl describe` lists Scheduled before the kubelet's events
                bind_ns = time.time_ns()
                await self.client.bind(md["namespace"], md["name"], node, md.get("uid"))
            except asyncio.CancelledError:
                raise
            except (NotFoundError, ConflictError) as exc:
                # deleted, or already bound by someone else: the informer will tell us the truth
                log.debug("bind %s -> %s: %s", key, node, exc)
                if key in self.cache.assumed:
                    self.cache.remove_pod(key)
                    if key in self.pending and isinstance(exc, ConflictError) and "already" not in str(exc):
                        self.queue.add_backoff(key)
                return
            except Exception as exc:
                log.warning("bind %s -> %s failed: %s", key, node, exc)
                if key in self.cache.assumed:
                    self.cache.remove_pod(key)
                self.queue.add_backoff(key)
                return
        self.bound_at[key] = time.time()
        self.recorder.event(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {node}", at_ns=bind_ns)

    async def _select_volume_nodes(self, pod: dict, node: str) -> None:
        ns = pod["metadata"].get("namespace")
        for v in (pod.get("spec") or {}).get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.pvcs.get_by(ns, claim)
            if pvc is None or (pvc.get("spec") or {}).get("volumeName"):
                continue
            if (pvc["metadata"].get("annotations") or {}).get("volume.kubernetes.io/selected-node") == node:
                continue
            await self.client.patch(
                R.PVCS, claim, {"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}}, ns
            )

    def _unschedulable(self, pod: dict, st: P.PodState, msg: str, reasons: dict) -> None:
        key = st.key
        self.failed_attempts += 1
        self.queue.mark_unschedulable(key)
        cur = None
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled":
                cur = c
        if cur is None or cur.get("status") != "False" or cur.get("message") != msg:
            t = asyncio.ensure_future(self._set_unschedulable(pod, msg))
            self._binds.add(t)
            t.add_done_callback(self._binds.discard)
        self.recorder.event(pod, "Warning", "FailedScheduling", msg)

    async def _set_unschedulable(self, pod: dict, msg: str) -> None:
        md = pod["metadata"]
        patch = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": msg, "lastProbeTime": None, "lastTransitionTime": now()}]}}
        try:
            await self.client.patch(R.PODS, md["name"], patch, md["namespace"], subresource="status",
                                    content_type="application/strategic-merge-patch+json")
        except ApiError as exc:
            log.debug("status of %s/%s: %s", md["namespace"], md["name"], exc)

    # ---- preemption
    def _preempt(self, pod: dict, st: P.PodState, reasons: dict[str, list[str]], msg: str) -> bool:
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never" or (st.priority <= 0 and not any(
            p.priority < st.priority for p in self.cache.pods.values()
        )):
            return False
        best: tuple[tuple[int, int, int], str, list[PodInfo]] | None = None
        for name, rs in reasons.items():
            if not P.resolvable(rs):
                continue
            ni = self.cache.nodes.get(name)
            if ni is None:
                continue
            lower = sorted((p for p in ni.pods.values() if p.priority < st.priority), key=lambda p: -p.priority)
            if not lower or not P.pod_fits_after_removing(st, ni, lower):
                continue
            victims = list(lower)
            # kube's SelectVictimsOnNode: reprieve pods whose eviction would violate a
            # PodDisruptionBudget first, then the others, most important first, while the pod still fits
            violating = self._pdb_violating(lower)
            for p in [p for p in lower if p.key in violating] + [p for p in lower if p.key not in violating]:
                trial = [v for v in victims if v is not p]
                if P.pod_fits_after_removing(st, ni, trial):
                    victims = trial
            rank = (sum(1 for v in victims if v.key in violating), max(v.priority for v in victims), len(victims))
            if best is None or rank < best[0]:
                best = (rank, name, victims)
        if best is None:
            return False
        _, node, victims = best
        ni = self.cache.nodes[node]
        ni.nominated[st.key] = (st.priority, st.req)
        self.queue.mark_unschedulable(st.key)
        t = asyncio.ensure_future(self._do_preempt(pod, node, victims, msg))
        self._binds.add(t)
        t.add_done_callback(self._binds.discard)
        return True

    def _pdb_violating(self, pods: list[PodInfo]) -> set[str]:
        """Keys of the pods whose removal would exceed a PodDisruptionBudget's disruptionsAllowed
        (kube's filterPodsWithPDBViolation: budgets are used up in the given order)."""
        allowed: dict[str, int] = {}
        out: set[str] = set()
        for p in pods:
            for pdb in self.pdbs.list(p.namespace):
                sel = (pdb.get("spec") or {}).get("selector")
                if sel is None or not match_labels(sel, p.labels):
                    continue
                st = pdb.get("status") or {}
                if p.name in (st.get("disruptedPods") or {}):
                    continue  # already being disrupted: no further budget spent
                k = pdb["metadata"]["name"]
                allowed.setdefault(k, int(st.get("disruptionsAllowed") or 0))
                allowed[k] -= 1
                if allowed[k] < 0:
                    out.add(p.key)
        return out

    async def _do_preempt(self, pod: dict, node: str, victims: list[PodInfo], msg: str) -> None:
        md = pod["metadata"]
        try:
            await self.client.patch(R.PODS, md["name"], {"status": {"nominatedNodeName": node}}, md["namespace"],
                                    subresource="status")
        except ApiError:
            pass
        self.recorder.event(pod, "Warning", "FailedScheduling", msg)
        for v in victims:
            self.recorder.event(v.pod, "Normal", "Preempted", f"Preempted by pod {md.get('uid')} on node {node}")
            try:
                await self.client.delete(R.PODS, v.name, v.namespace)
            except ApiError:
                pass


def fit_error_message(n: int, reasons: dict[str, list[str]]) -> str:
    counts: Counter = Counter()
    for rs in reasons.values():
        for r in rs:
            counts[r] += 1
    parts = [f"{c} {r}" for r, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"0/{n} nodes are available: {', '.join(parts)}."


def preemption_message(n: int, reasons: dict[str, list[str]], tried: bool) -> str:
    counts: Counter = Counter()
    for rs in reasons.values():
        if P.resolvable(rs):
            counts["No preemption victims found for incoming pod"] += 1
        else:
            counts["Preemption is not helpful for scheduling"] += 1
    parts = [f"{c} {r}" for r, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"preemption: 0/{n} nodes are available: {', '.join(parts)}."


_ = pod_priority
