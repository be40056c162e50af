"""ReplicaSet: keep ``spec.replicas`` active pods matching the template; adopt orphans; status."""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import (
    controller_of,
    match_labels,
    owner_ref,
    parse_time,
    pod_active,
    pod_ready,
    split_key,
)
from tugboat.cluster.controllers.base import Controller, Expectations, owned_by

log = logging.getLogger(__name__)
BURST = 500


def pod_available(pod: dict, min_ready: int, now: float) -> bool:
    if not pod_ready(pod):
        return False
    if min_ready <= 0:
        return True
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return parse_time(c.get("lastTransitionTime")) + min_ready <= now
    return False


def deletion_rank(pod: dict) -> tuple:
    """Sort key: pods to delete first come first (kube's ActivePods ordering)."""
    st = pod.get("status") or {}
    assigned = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase") or "Pending", 0)
    ready = 1 if pod_ready(pod) else 0
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (assigned, phase, ready, -restarts, -created)


def pod_from_template(template: dict, owner: dict, *, name: str | None = None, generate: str | None = None) -> dict:
    tmpl = copy.deepcopy(template or {})
    md = tmpl.get("metadata") or {}
    pod_md = {"labels": md.get("labels") or {}, "annotations": md.get("annotations") or {},
              "namespace": owner["metadata"]["namespace"], "ownerReferences": [owner_ref(owner)]}
    if name:
        pod_md["name"] = name
    else:
        pod_md["generateName"] = generate or (owner["metadata"]["name"] + "-")
    if md.get("finalizers"):
        pod_md["finalizers"] = md["finalizers"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_md, "spec": tmpl.get("spec") or {}}


async def create_pods(client, pods: list[dict], ns: str, on_fail, on_created=None) -> int:  # type: ignore[no-untyped-def]
    """Create in slow-start batches (1, 2, 4, ...); stops at the first batch with errors."""
    done, batch, i = 0, 1, 0
    while i < len(pods):
        chunk = pods[i : i + batch]
        res = await asyncio.gather(*(client.create(R.PODS, p, ns) for p in chunk), return_exceptions=True)
        errs = [r for r in res if isinstance(r, BaseException)]
        for r in res:
            if isinstance(r, dict) and on_created is not None:
                on_created(r)
        done += len(chunk) - len(errs)
        for e in errs:
            on_fail(e)
        i += len(chunk)
        if errs:
            return done
        batch = min(batch * 2, BURST)
    return done


class ReplicaSetController(Controller):
    name = "replicaset"

    def setup(self) -> None:
        self.rs = self.ctx.informer(R.REPLICASETS)
        self.pods = self.ctx.informer(R.PODS)
        if "orphan" not in self.pods._indexers:
            self.pods.add_index("orphan", lambda p: [p["metadata"].get("namespace") or ""]
                                if controller_of(p) is None else [])
        self.exp = Expectations()
        self.rs.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(self._pod_add, self._pod_update, self._pod_delete)

    def _owner_key(self, pod: dict) -> str | None:
        ref = controller_of(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            return f"{pod['metadata']['namespace']}/{ref['name']}"
        return None

    def _pod_add(self, pod: dict) -> None:
        k = self._owner_key(pod)
        if k:
            self.exp.observed_add(k)
            self.queue.add(k)
        elif pod_active(pod):
            self._enqueue_matching(pod)

    def _pod_update(self, old: dict, new: dict) -> None:
        k = self._owner_key(new)
        if k:
            self.queue.add(k)
            if new["metadata"].get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp"):
                self.exp.observed_del(k)
        ok = self._owner_key(old)
        if ok and ok != k:
            self.queue.add(ok)
        if not k and old["metadata"].get("labels") != new["metadata"].get("labels"):
            self._enqueue_matching(new)

    def _pod_delete(self, pod: dict) -> None:
        k = self._owner_key(pod)
        if k:
            if not pod["metadata"].get("deletionTimestamp"):
                self.exp.observed_del(k)
            self.queue.add(k)

    def _enqueue_matching(self, pod: dict) -> None:
        for rs in self.rs.list(pod["metadata"]["namespace"]):
            if match_labels((rs.get("spec") or {}).get("selector"), pod["metadata"].get("labels")):
                self.enqueue(rs)

    async def sync(self, key: str) -> None:
        rs = self.rs.get(key)
        if rs is None:
            self.exp.forget(key)
            return
        ns, _ = split_key(key)
        spec = rs.get("spec") or {}
        selector = spec.get("selector") or {}
        pods = owned_by(self.pods, rs)
        # adopt orphans matching the selector
        if not rs["metadata"].get("deletionTimestamp"):
            for p in self.pods.by_index("orphan", ns or ""):
                if controller_of(p) is None and pod_active(p) and match_labels(selector, p["metadata"].get("labels")) \
                        and selector:
                    try:
                        refs = [*(p["metadata"].get("ownerReferences") or []), owner_ref(rs)]
                        await self.client.patch(R.PODS, p["metadata"]["name"],
                                                {"metadata": {"ownerReferences": refs,
                                                              "resourceVersion": p["metadata"]["resourceVersion"]}}, ns)
                        pods.append(p)
                    except ApiError:
                        pass
        active = [p for p in pods if pod_active(p)]
        if self.exp.satisfied(key) and not rs["metadata"].get("deletionTimestamp"):
            await self._manage(rs, active, key)
        await self._update_status(rs, pods, active)

    async def _manage(self, rs: dict, active: list[dict], key: str) -> None:
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        ns = rs["metadata"]["namespace"]
        if diff < 0:
            n = min(-diff, BURST)
            self.exp.expect(key, adds=n)
            pods = [pod_from_template(rs["spec"].get("template"), rs) for _ in range(n)]
            failures: list[BaseException] = []

            def failed(e: BaseException) -> None:
                failures.append(e)
                self.exp.observed_add(key)

            def ok(p: dict) -> None:
                self.recorder.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {p['metadata']['name']}")

            created = await create_pods(self.client, pods, ns, failed, ok)
            skipped = n - created - len(failures)
            for _ in range(skipped):
                self.exp.observed_add(key)
            if failures:
                msg = str(failures[0])
                self.recorder.event(rs, "Warning", "FailedCreate", f"Error creating: {msg}")
                raise failures[0]
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[: min(diff, BURST)]
            self.exp.expect(key, dels=len(victims))

            async def rm(p: dict) -> None:
                try:
                    await self.client.delete(R.PODS, p["metadata"]["name"], ns,
                                             preconditions={"uid": p["metadata"]["uid"]})
                    self.recorder.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}")
                except (NotFoundError, ConflictError):
                    self.exp.observed_del(key)

            await asyncio.gather(*(rm(p) for p in victims))

    async def _update_status(self, rs: dict, pods: list[dict], active: list[dict]) -> None:
        spec = rs.get("spec") or {}
        now = time.time()
        min_ready = int(spec.get("minReadySeconds") or 0)
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if pod_ready(p)]
        available = [p for p in ready if pod_available(p, min_ready, now)]
        st = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active if all(
                (p["metadata"].get("labels") or {}).get(k) == v for k, v in tmpl_labels.items())),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if min_ready and len(ready) > len(available):
            self.enqueue_after(f"{rs['metadata']['namespace']}/{rs['metadata']['name']}", min_ready)
        old = rs.get("status") or {}
        if all(old.get(k, 0) == v for k, v in st.items()):
            return
        new = dict(rs)
        new["status"] = {**old, **st}
        try:
            await self.client.update_status(R.REPLICASETS, new)
        except NotFoundError:
            pass
