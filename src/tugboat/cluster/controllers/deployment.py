"""Deployment: ReplicaSets per pod template, RollingUpdate (maxSurge/maxUnavailable) and Recreate,
revisions (``deployment.kubernetes.io/revision``) so that ``kubectl rollout undo`` works, pause and
resume, progressDeadlineSeconds, and the status ``kubectl rollout status`` reads.
The algorithms follow kube's deployment controller (sync.go, rolling.go, recreate.go)."""

from __future__ import annotations

import copy
import json
import logging
import math
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import (
    condition,
    controller_of,
    hash_obj,
    match_labels,
    now,
    owner_ref,
    parse_time,
    pod_active,
    split_key,
)
from tugboat.cluster.controllers.base import Controller, owned_by

log = logging.getLogger(__name__)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"
SKIP_ANNOTATIONS = {REVISION, REVISION_HISTORY, DESIRED, MAX_REPLICAS, "kubectl.kubernetes.io/last-applied-configuration"}


def resolve(v: int | str | None, total: int, round_up: bool, default: str) -> int:
    v = default if v is None else v
    if isinstance(v, str) and v.endswith("%"):
        x = float(v[:-1]) * total / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(v)


def surge_unavailable(d: dict) -> tuple[int, int]:
    spec = d.get("spec") or {}
    ru = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
    reps = int(spec.get("replicas", 1))
    surge = resolve(ru.get("maxSurge"), reps, True, "25%")
    unavail = resolve(ru.get("maxUnavailable"), reps, False, "25%")
    if surge == 0 and unavail == 0:
        unavail = 1
    return surge, unavail


def _template_key(tmpl: dict) -> str:
    t = copy.deepcopy(tmpl or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH, None)
    return json.dumps(t, sort_keys=True)


def template_hash(tmpl: dict, collisions: int) -> str:
    return hash_obj((_template_key(tmpl) + f"|{collisions}").encode())


def revision(obj: dict) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def reps(rs: dict) -> int:
    return int((rs.get("spec") or {}).get("replicas") or 0)


def st(rs: dict, k: str) -> int:
    return int((rs.get("status") or {}).get(k) or 0)


class DeploymentController(Controller):
    name = "deployment"

    def setup(self) -> None:
        self.deps = self.ctx.informer(R.DEPLOYMENTS)
        self.rs = self.ctx.informer(R.REPLICASETS)
        self.pods = self.ctx.informer(R.PODS)
        self.deps.add_handler(*self.handlers(self.enqueue))
        self.rs.add_handler(*self.handlers(self._rs_changed))
        self.pods.add_handler(on_delete=self._pod_deleted)
        self._progress: dict[str, tuple[str, str]] = {}

    def _rs_changed(self, rs: dict) -> None:
        ref = controller_of(rs)
        if ref and ref.get("kind") == "Deployment":
            self.queue.add(f"{rs['metadata']['namespace']}/{ref['name']}")
        elif ref is None:
            for d in self.deps.list(rs["metadata"]["namespace"]):
                if match_labels((d.get("spec") or {}).get("selector"), rs["metadata"].get("labels")):
                    self.enqueue(d)

    def _pod_deleted(self, pod: dict) -> None:
        # Recreate waits for old pods to be gone
        ref = controller_of(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            rs = self.rs.get_by(pod["metadata"]["namespace"], ref["name"])
            if rs is not None:
                self._rs_changed(rs)

    # ---- helpers
    async def _scale(self, d: dict, rs: dict, n: int) -> dict:
        if reps(rs) == n and (rs["metadata"].get("annotations") or {}).get(DESIRED) == str(d["spec"].get("replicas", 1)):
            return rs
        old_n = reps(rs)
        surge, _ = surge_unavailable(d)
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = n
        ann = new["metadata"].setdefault("annotations", {})
        ann[DESIRED] = str(d["spec"].get("replicas", 1))
        ann[MAX_REPLICAS] = str(int(d["spec"].get("replicas", 1)) + surge)
        out = await self.client.update(R.REPLICASETS, new)
        if old_n != n:
            word = "up" if n > old_n else "down"
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled {word} replica set {rs['metadata']['name']} from {old_n} to {n}")
        return out

    def _find_new(self, d: dict, rss: list[dict]) -> dict | None:
        want = _template_key(d["spec"].get("template") or {})
        cands = [rs for rs in rss if _template_key(rs["spec"].get("template") or {}) == want]
        if not cands:
            return None
        return sorted(cands, key=lambda r: parse_time(r["metadata"].get("creationTimestamp")))[0]

    async def _new_rs(self, d: dict, rss: list[dict], create: bool, new_reps: int | None = None) -> tuple[dict | None, list[dict]]:
        new = self._find_new(d, rss)
        olds = [r for r in rss if r is not new]
        max_old = max((revision(r) for r in olds), default=0)
        new_rev = max_old + 1
        ann_src = {k: v for k, v in (d["metadata"].get("annotations") or {}).items() if k not in SKIP_ANNOTATIONS}
        if new is not None:
            if revision(new) < new_rev or any((new["metadata"].get("annotations") or {}).get(k) != v
                                              for k, v in ann_src.items()):
                upd = copy.deepcopy(new)
                ann = upd["metadata"].setdefault("annotations", {})
                old_rev = ann.get(REVISION)
                if revision(new) < new_rev:
                    if old_rev:
                        hist = [h for h in (ann.get(REVISION_HISTORY) or "").split(",") if h]
                        ann[REVISION_HISTORY] = ",".join([*hist, old_rev])
                    ann[REVISION] = str(new_rev)
                ann.update(ann_src)
                new = await self.client.update(R.REPLICASETS, upd)
            await self._set_deployment_revision(d, revision(new))
            return new, olds
        if not create:
            return None, olds
        spec = d["spec"]
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        h = template_hash(spec.get("template") or {}, collisions)
        tmpl = copy.deepcopy(spec.get("template") or {})
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH] = h
        sel = copy.deepcopy(spec.get("selector") or {})
        sel.setdefault("matchLabels", {})[HASH] = h
        surge, _ = surge_unavailable(d)
        n = new_reps if new_reps is not None else int(spec.get("replicas", 1))
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{h}",
                "namespace": d["metadata"]["namespace"],
                "labels": {**(tmpl["metadata"].get("labels") or {})},
                "annotations": {**ann_src, REVISION: str(new_rev), DESIRED: str(spec.get("replicas", 1)),
                                MAX_REPLICAS: str(int(spec.get("replicas", 1)) + surge)},
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {"replicas": n, "minReadySeconds": int(spec.get("minReadySeconds") or 0), "selector": sel,
                     "template": tmpl},
        }
        try:
            new = await self.client.create(R.REPLICASETS, body)
        except ConflictError:
            existing = await self.client.get(R.REPLICASETS, body["metadata"]["name"], d["metadata"]["namespace"])
            if _template_key(existing["spec"].get("template")) == _template_key(spec.get("template")):
                new = existing
            else:
                # hash collision: bump collisionCount and retry on the next sync
                dd = copy.deepcopy(d)
                dd.setdefault("status", {})["collisionCount"] = collisions + 1
                await self.client.update_status(R.DEPLOYMENTS, dd)
                raise
        if n > 0:
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled up replica set {new['metadata']['name']} from 0 to {n}")
        await self._set_deployment_revision(d, new_rev)
        self._progress[f"{d['metadata']['namespace']}/{d['metadata']['name']}"] = (
            "NewReplicaSetCreated", f'Created new replica set "{new["metadata"]["name"]}"')
        return new, olds

    async def _set_deployment_revision(self, d: dict, rev: int) -> None:
        if revision(d) == rev:
            return
        try:
            await self.client.patch(R.DEPLOYMENTS, d["metadata"]["name"],
                                    {"metadata": {"annotations": {REVISION: str(rev)}}}, d["metadata"]["namespace"])
        except ApiError as exc:
            log.debug("revision annotation: %s", exc)

    # ---- sync
    async def sync(self, key: str) -> None:
        d = self.deps.get(key)
        if d is None:
            return
        d = copy.deepcopy(d)
        self._progress.pop(key, None)
        ns, _ = split_key(key)
        if d["metadata"].get("deletionTimestamp"):
            return
        selector = (d.get("spec") or {}).get("selector") or {}
        rss = owned_by(self.rs, d)
        # adopt orphan ReplicaSets matching the selector
        for rs in self.rs.list(ns):
            if controller_of(rs) is None and selector and match_labels(selector, rs["metadata"].get("labels")) \
                    and not rs["metadata"].get("deletionTimestamp"):
                try:
                    refs = [*(rs["metadata"].get("ownerReferences") or []), owner_ref(d)]
                    rs = await self.client.patch(R.REPLICASETS, rs["metadata"]["name"],
                                                 {"metadata": {"ownerReferences": refs}}, ns)
                    rss.append(rs)
                except ApiError:
                    pass
        # act only on fresh ReplicaSet status (availability numbers drive scale-downs)
        if any((r.get("status") or {}).get("observedGeneration", 0) < r["metadata"].get("generation", 1) for r in rss):
            self.enqueue_after(key, 0.5)
            return
        spec = d["spec"]
        if spec.get("paused"):
            await self._sync_paused(d, rss)
            return
        if self._is_scaling_event(d, rss):
            new, olds = await self._new_rs(d, rss, create=False)
            await self._scale_event(d, new, olds)
            await self._status(d, new, olds)
            return
        strategy = (spec.get("strategy") or {}).get("type") or "RollingUpdate"
        if strategy == "Recreate":
            await self._recreate(d, rss)
        else:
            await self._rolling(d, rss)

    async def _sync_paused(self, d: dict, rss: list[dict]) -> None:
        new, olds = await self._new_rs(d, rss, create=False)
        await self._scale_event(d, new, olds)
        await self._status(d, new, olds, paused=True)

    def _is_scaling_event(self, d: dict, rss: list[dict]) -> bool:
        want = str(d["spec"].get("replicas", 1))
        for rs in rss:
            if reps(rs) > 0:
                desired = (rs["metadata"].get("annotations") or {}).get(DESIRED)
                if desired is not None and desired != want:
                    return True
        return False

    async def _scale_event(self, d: dict, new: dict | None, olds: list[dict]) -> None:
        """kube's sync.go scale(): replicas changed while possibly mid-rollout; scale the active
        ReplicaSets proportionally (leftovers to the largest)."""
        want = int(d["spec"].get("replicas", 1))
        everything = ([new] if new is not None else []) + list(olds)
        active = [r for r in everything if reps(r) > 0]
        if len(active) <= 1:
            target = active[0] if active else (new if new is not None else (
                max(olds, key=lambda r: parse_time(r["metadata"].get("creationTimestamp"))) if olds else None))
            if target is not None:
                await self._scale(d, target, want)
            return
        if new is not None and reps(new) == want and st(new, "availableReplicas") == want and \
                (new["metadata"].get("annotations") or {}).get(DESIRED) == str(want):
            for rs in olds:
                if reps(rs) > 0:
                    await self._scale(d, rs, 0)
            return
        if ((d["spec"].get("strategy") or {}).get("type") or "RollingUpdate") != "RollingUpdate":
            return
        surge, _ = surge_unavailable(d)
        allowed = want + surge if want > 0 else 0
        to_add = allowed - sum(reps(r) for r in active)
        if to_add > 0:
            active.sort(key=lambda r: (-reps(r), -parse_time(r["metadata"].get("creationTimestamp"))))
        elif to_add < 0:
            active.sort(key=lambda r: (-reps(r), parse_time(r["metadata"].get("creationTimestamp"))))
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            prop = 0
            if to_add != 0 and added != to_add:
                if want == 0:
                    frac = -reps(rs)
                else:
                    ann = (rs["metadata"].get("annotations") or {}).get(MAX_REPLICAS)
                    annotated = int(ann) if ann and ann.isdigit() and int(ann) > 0 else max(
                        1, int((d.get("status") or {}).get("replicas") or 1))
                    frac = math.floor(reps(rs) * allowed / annotated + 0.5) - reps(rs)
                left = to_add - added
                prop = min(frac, left) if to_add > 0 else max(frac, left)
            sizes[rs["metadata"]["name"]] = reps(rs) + prop
            added += prop
        for i, rs in enumerate(active):
            n = sizes[rs["metadata"]["name"]]
            if i == 0 and to_add != 0:
                n = max(0, n + to_add - added)
            await self._scale(d, rs, n)

    async def _rolling(self, d: dict, rss: list[dict]) -> None:
        want = int(d["spec"].get("replicas", 1))
        surge, unavail = surge_unavailable(d)
        existing_new = self._find_new(d, rss)
        if existing_new is None:
            total = sum(reps(r) for r in rss)
            first = min(want, max(0, want + surge - total))
            if not rss:
                first = want
            new, olds = await self._new_rs(d, rss, create=True, new_reps=first)
            await self._status(d, new, olds)
            return
        new, olds = await self._new_rs(d, rss, create=True)
        assert new is not None
        all_rs = [new, *olds]
        # reconcileNewReplicaSet
        if reps(new) > want:
            await self._scale(d, new, want)
            await self._status(d, new, olds)
            return
        if reps(new) < want:
            current = sum(reps(r) for r in all_rs)
            max_total = want + surge
            if current < max_total:
                up = min(max_total - current, want - reps(new))
                await self._scale(d, new, reps(new) + up)
                await self._status(d, new, olds)
                return
        # reconcileOldReplicaSets
        old_count = sum(reps(r) for r in olds)
        if old_count > 0:
            all_count = sum(reps(r) for r in all_rs)
            min_available = want - unavail
            new_unavailable = reps(new) - st(new, "availableReplicas")
            max_down = all_count - min_available - new_unavailable
            scaled = False
            if max_down > 0:
                # clean up unhealthy replicas of old sets first
                cleaned = 0
                for rs in sorted(olds, key=lambda r: parse_time(r["metadata"].get("creationTimestamp"))):
                    if cleaned >= max_down:
                        break
                    unhealthy = reps(rs) - st(rs, "availableReplicas")
                    if reps(rs) == 0 or unhealthy <= 0:
                        continue
                    n = min(unhealthy, max_down - cleaned)
                    await self._scale(d, rs, reps(rs) - n)
                    rs["spec"]["replicas"] = reps(rs) - n
                    cleaned += n
                    scaled = True
                if cleaned == 0:
                    available = sum(st(r, "availableReplicas") for r in all_rs)
                    if available > min_available:
                        total_down = available - min_available
                        done = 0
                        for rs in sorted(olds, key=lambda r: parse_time(r["metadata"].get("creationTimestamp"))):
                            if done >= total_down:
                                break
                            if reps(rs) == 0:
                                continue
                            n = min(reps(rs), total_down - done)
                            await self._scale(d, rs, reps(rs) - n)
                            done += n
                            scaled = True
            if scaled:
                await self._status(d, new, olds)
                return
        if self._complete(d, new, olds):
            await self._cleanup(d, olds)
        await self._status(d, new, olds)

    async def _recreate(self, d: dict, rss: list[dict]) -> None:
        new, olds = await self._new_rs(d, rss, create=False)
        scaled = False
        for rs in olds:
            if reps(rs) > 0:
                await self._scale(d, rs, 0)
                scaled = True
        if scaled:
            await self._status(d, new, olds)
            return
        for rs in olds:
            if any(pod_active(p) or p["metadata"].get("deletionTimestamp") for p in owned_by(self.pods, rs)):
                await self._status(d, new, olds)
                return
        if new is None:
            new, olds = await self._new_rs(d, rss, create=True)
        assert new is not None
        want = int(d["spec"].get("replicas", 1))
        if reps(new) != want:
            await self._scale(d, new, want)
        if self._complete(d, new, olds):
            await self._cleanup(d, olds)
        await self._status(d, new, olds)

    def _complete(self, d: dict, new: dict | None, olds: list[dict]) -> bool:
        want = int(d["spec"].get("replicas", 1))
        if new is None:
            return False
        return (st(new, "replicas") == want and st(new, "availableReplicas") >= want
                and not any(st(r, "replicas") for r in olds) and reps(new) == want)

    async def _cleanup(self, d: dict, olds: list[dict]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        dead = [r for r in olds if reps(r) == 0 and st(r, "replicas") == 0 and not r["metadata"].get("deletionTimestamp")]
        if len(dead) <= limit:
            return
        dead.sort(key=revision)
        for rs in dead[: len(dead) - limit]:
            try:
                await self.client.delete(R.REPLICASETS, rs["metadata"]["name"], rs["metadata"]["namespace"])
            except NotFoundError:
                pass

    async def _status(self, d: dict, new: dict | None, olds: list[dict], *, paused: bool = False) -> None:
        all_rs = ([new] if new is not None else []) + list(olds)
        want = int(d["spec"].get("replicas", 1))
        _, unavail = surge_unavailable(d)
        old = copy.deepcopy(d.get("status") or {})
        total_spec = sum(reps(r) for r in all_rs)
        status = dict(old)
        status["observedGeneration"] = d["metadata"].get("generation", 1)
        status["replicas"] = sum(st(r, "replicas") for r in all_rs)
        status["updatedReplicas"] = st(new, "replicas") if new is not None else 0
        status["readyReplicas"] = sum(st(r, "readyReplicas") for r in all_rs)
        status["availableReplicas"] = sum(st(r, "availableReplicas") for r in all_rs)
        status["unavailableReplicas"] = max(0, total_spec - status["availableReplicas"])
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[k]:
                status.pop(k)
        conds = copy.deepcopy(old.get("conditions") or [])
        status["conditions"] = conds
        holder = {"status": status}
        from tugboat.cluster.client.util import set_condition

        if status.get("availableReplicas", 0) >= want - unavail:
            set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                          probe_time=True)
        else:
            set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", probe_time=True)
        deadline = d["spec"].get("progressDeadlineSeconds", 600)
        prog = condition(holder, "Progressing")
        rs_name = new["metadata"]["name"] if new is not None else ""
        if paused:
            if not prog or prog.get("reason") != "DeploymentPaused":
                set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", probe_time=True)
        elif prog is not None and prog.get("reason") == "DeploymentPaused":
            set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", probe_time=True)
        elif new is not None and self._complete(d, new, olds):
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rs_name}" has successfully progressed.', probe_time=True)
        elif new is not None:
            dkey = f"{d['metadata']['namespace']}/{d['metadata']['name']}"
            reason_msg = self._progress.pop(dkey, None)
            progressed = (
                status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
                or status.get("availableReplicas", 0) > old.get("availableReplicas", 0)
                or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
                or status.get("replicas", 0) < old.get("replicas", 0)
                or prog is None
                or (prog.get("message") or "").find(f'"{rs_name}"') < 0
            )
            if reason_msg is not None:
                set_condition(status, "Progressing", "True", reason_msg[0], reason_msg[1], probe_time=True)
            elif progressed:
                set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                              f'ReplicaSet "{rs_name}" is progressing.', probe_time=True)
                c = condition(holder, "Progressing")
                if c is not None:
                    c["lastUpdateTime"] = now()
            c = condition(holder, "Progressing")
            if deadline is not None and c is not None and c.get("reason") not in ("ProgressDeadlineExceeded",):
                left = parse_time(c.get("lastUpdateTime")) + int(deadline) - time.time()
                if left <= 0:
                    set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                                  f'ReplicaSet "{rs_name}" has timed out progressing.', probe_time=True)
                    self.recorder.event(d, "Warning", "ProgressDeadlineExceeded",
                                        f'Deployment "{d["metadata"]["name"]}" has timed out progressing.')
                else:
                    self.enqueue_after(f"{d['metadata']['namespace']}/{d['metadata']['name']}", left + 0.5)
        # keep conditions in kube's order: Available, Progressing
        status["conditions"] = sorted(conds, key=lambda c: {"Available": 0, "Progressing": 1}.get(c.get("type"), 2))
        if status == old:
            return
        dd = copy.deepcopy(self.deps.get(f"{d['metadata']['namespace']}/{d['metadata']['name']}") or d)
        dd["status"] = status
        try:
            await self.client.update_status(R.DEPLOYMENTS, dd)
        except NotFoundError:
            pass
