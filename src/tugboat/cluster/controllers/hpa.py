"""HorizontalPodAutoscaler (autoscaling/v2): CPU/memory utilization or average value from
metrics.k8s.io, kube's algorithm (ratio = current/target, no change within the 0.1 tolerance,
desired = ceil(ratio * ready pods)), scale-up/scale-down rate policies and the scale-down
stabilization window (default 300 s)."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, NotFoundError
from tugboat.cluster.client.util import milli, now, pod_ready, quantity, set_condition, whole
from tugboat.cluster.controllers.base import Controller
from tugboat.cluster.sim.selectors import parse_label_selector

log = logging.getLogger(__name__)


def _usage(q: str, resource: str) -> int:
    return milli(q) if resource == "cpu" else whole(q)


def _current(mtype: str, rname: str, container: str | None, current: dict) -> dict:
    if mtype == "ContainerResource":
        return {"type": mtype, "containerResource": {"name": rname, "container": container, "current": current}}
    return {"type": mtype, "resource": {"name": rname, "current": current}}


class HPAController(Controller):
    name = "horizontalpodautoscaling"
    component = "horizontal-pod-autoscaler"

    def setup(self) -> None:
        self.hpas = self.ctx.informer(R.HPAS)
        self.pods = self.ctx.informer(R.PODS)
        self.hpas.add_handler(self.enqueue, lambda old, new: self.enqueue(new) if old.get("spec") != new.get("spec") else None,
                              lambda o: self._recs.pop(f"{o['metadata']['namespace']}/{o['metadata']['name']}", None))
        self._recs: dict[str, list[tuple[float, int]]] = {}  # recommendations for stabilization
        self._events: dict[str, list[tuple[float, int]]] = {}  # (time, change) for rate policies

    def _target_res(self, ref: dict) -> R.Resource | None:
        return R.for_kind(ref.get("apiVersion", "apps/v1"), ref.get("kind", ""))

    async def sync(self, key: str) -> None:
        hpa = self.hpas.get(key)
        if hpa is None:
            return
        try:
            await self._reconcile(copy.deepcopy(hpa), key)
        finally:
            self.enqueue_after(key, self.ctx.options.hpa_sync_period)

    async def _reconcile(self, hpa: dict, key: str) -> None:
        ns = hpa["metadata"]["namespace"]
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        status = copy.deepcopy(hpa.get("status") or {})
        res = self._target_res(ref)
        if res is None:
            set_condition(status, "AbleToScale", "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: no kind {ref.get('kind')}")
            await self._write(hpa, status)
            return
        try:
            scale = await self.client.request("GET", res.path(ns, ref.get("name"), "scale"))
        except ApiError as exc:
            set_condition(status, "AbleToScale", "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: {exc}")
            self.recorder.event(hpa, "Warning", "FailedGetScale", str(exc))
            await self._write(hpa, status)
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        selector = (scale.get("status") or {}).get("selector") or ""
        min_r = int(spec.get("minReplicas") or 1)
        max_r = int(spec.get("maxReplicas") or 1)
        set_condition(status, "AbleToScale", "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale")
        if current == 0 and min_r > 0:
            set_condition(status, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero")
            status["currentReplicas"] = 0
            status["desiredReplicas"] = 0
            await self._write(hpa, status)
            return
        match = parse_label_selector(selector)
        pods = [p for p in self.pods.list(ns) if match(p["metadata"].get("labels") or {})
                and not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        metrics = spec.get("metrics") or [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
        try:
            pm = await self.client.request("GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods")
            usage = {m["metadata"]["name"]: m for m in (pm or {}).get("items") or []}
        except ApiError as exc:
            usage = {}
            log.debug("metrics: %s", exc)
        proposals: list[tuple[int, str]] = []
        current_metrics = []
        for m in metrics:
            mtype = m.get("type")
            if mtype not in ("Resource", "ContainerResource"):
                continue
            r = (m.get("resource") if mtype == "Resource" else m.get("containerResource")) or {}
            rname = r.get("name", "cpu")
            target = r.get("target") or {}
            only = r.get("container") if mtype == "ContainerResource" else None
            ttype = target.get("type", "Utilization")
            # kube's replica calculator: ratio from ready pods with metrics; then missing metrics
            # count as 0 % (scale up) or 100 % of request (scale down), unready pods (cpu) as 0 %
            # when scaling up; no change if that flips the direction or lands within tolerance
            ready: list[tuple[int, int]] = []  # (usage, request)
            missing: list[int] = []  # requests of pods without metrics
            unready: list[int] = []
            for p in pods:
                req = sum(_usage(((c.get("resources") or {}).get("requests") or {}).get(rname, "0"), rname)
                          for c in (p.get("spec") or {}).get("containers") or [] if only is None or c.get("name") == only)
                pmx = usage.get(p["metadata"]["name"])
                if (p.get("status") or {}).get("phase") == "Pending" or (rname == "cpu" and not pod_ready(p)):
                    unready.append(req)
                elif pmx is None:
                    missing.append(req)
                else:
                    used_p = sum(_usage((c.get("usage") or {}).get(rname, "0"), rname) for c in pmx.get("containers") or []
                                 if only is None or c.get("name") == only)
                    ready.append((used_p, req))
            if not ready:
                continue
            used = sum(u for u, _ in ready)
            requested = sum(r for _, r in ready)
            n_ready = len(ready)
            if ttype == "Utilization":
                if requested == 0 or any(r == 0 for _, r in ready):
                    set_condition(status, "ScalingActive", "False", "FailedGetResourceMetric",
                                  f"the HPA was unable to compute the replica count: missing request for {rname}")
                    self.recorder.event(hpa, "Warning", "FailedGetResourceMetric", f"missing request for {rname}")
                    continue
                util = used * 100 / requested
                tgt = float(target.get("averageUtilization") or 80)
                ratio = util / tgt
                current_metrics.append(_current(mtype, rname, only, {
                    "averageUtilization": round(util),
                    "averageValue": f"{used // n_ready}m" if rname == "cpu" else str(used // n_ready)}))
                reason = f"{rname} resource utilization (percentage of request) {'above' if ratio > 1 else 'below'} target"

                def ratio_of(samples: list[tuple[int, int]], tgt: float = tgt) -> float:
                    return sum(u for u, _ in samples) * 100 / max(1, sum(r for _, r in samples)) / tgt
            else:
                avg = used / n_ready
                tq = quantity(target.get("averageValue") or "0")
                tv = float(tq * 1000) if rname == "cpu" else float(tq)
                if tv <= 0:
                    continue
                ratio = avg / tv
                current_metrics.append(_current(mtype, rname, only, {
                    "averageValue": f"{int(avg)}m" if rname == "cpu" else str(int(avg))}))
                reason = f"{rname} resource {'above' if ratio > 1 else 'below'} target"

                def ratio_of(samples: list[tuple[int, int]], tv: float = tv) -> float:
                    return sum(u for u, _ in samples) / max(1, len(samples)) / tv
            tol = self.ctx.options.hpa_tolerance
            if not missing and not unready:
                proposals.append((current if abs(ratio - 1.0) <= tol else math.ceil(ratio * n_ready), reason))
                continue
            if abs(ratio - 1.0) <= tol and not (ratio > 1.0 and unready):
                proposals.append((current, reason))
                continue
            samples = list(ready)
            if ratio < 1.0:
                # scaling down: pods without metrics count as using their request (Utilization)
                # or exactly the target (AverageValue)
                at_target = 0 if ttype == "Utilization" else int(float(quantity(target.get("averageValue") or "0")
                                                                          * (1000 if rname == "cpu" else 1)))
                samples += [(r if ttype == "Utilization" else at_target, r) for r in missing]
            else:
                samples += [(0, r) for r in missing] + [(0, r) for r in unready]
            new_ratio = ratio_of(samples)
            if abs(new_ratio - 1.0) <= tol or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
                proposals.append((current, reason))
                continue
            desired_n = math.ceil(new_ratio * len(samples))
            if (new_ratio < 1.0 and desired_n > current) or (new_ratio > 1.0 and desired_n < current):
                desired_n = current
            proposals.append((desired_n, reason))
        if not proposals:
            set_condition(status, "ScalingActive", "False", "FailedGetResourceMetric",
                          "the HPA was unable to compute the replica count: no metrics returned from resource metrics API")
            status["currentReplicas"] = current
            status.setdefault("desiredReplicas", current)
            await self._write(hpa, status)
            return
        set_condition(status, "ScalingActive", "True", "ValidMetricFound",
                      "the HPA was able to successfully calculate a replica count from " + proposals[0][1].split(" resource")[0]
                      + " resource utilization (percentage of request)")
        desired, reason = max(proposals)
        desired = self._stabilize(key, hpa, current, desired)
        limited = min(max(desired, min_r), max_r)
        if limited != desired:
            set_condition(status, "ScalingLimited", "True", "TooManyReplicas" if desired > max_r else "TooFewReplicas",
                          "the desired replica count is more than the maximum replica count" if desired > max_r else
                          "the desired replica count is less than the minimum replica count")
        else:
            set_condition(status, "ScalingLimited", "False", "DesiredWithinRange",
                          "the desired count is within the acceptable range")
        desired = limited
        status["currentReplicas"] = current
        status["desiredReplicas"] = desired
        status["currentMetrics"] = current_metrics or None
        if desired != current:
            try:
                await self.client.patch(res, ref["name"], {"spec": {"replicas": desired}}, ns, subresource="scale")
            except ApiError as exc:
                set_condition(status, "AbleToScale", "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {exc}")
                self.recorder.event(hpa, "Warning", "FailedRescale", f"New size: {desired}; error: {exc}")
                await self._write(hpa, status)
                return
            self._events.setdefault(key, []).append((time.monotonic(), desired - current))
            status["lastScaleTime"] = now()
            set_condition(status, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}")
            self.recorder.event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
        else:
            set_condition(status, "AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size")
        await self._write(hpa, status)

    def _stabilize(self, key: str, hpa: dict, current: int, desired: int) -> int:
        behavior = (hpa.get("spec") or {}).get("behavior") or {}
        down = behavior.get("scaleDown") or {}
        up = behavior.get("scaleUp") or {}
        window_down = self.ctx.options.hpa_downscale_window
        if window_down is None:
            window_down = float(down.get("stabilizationWindowSeconds", 300))
        window_up = float(up.get("stabilizationWindowSeconds", 0))
        t = time.monotonic()
        if key not in self._recs:
            self._recs[key] = [(t, current)]  # as kube: a new autoscaler starts from the current size
        recs = self._recs[key]
        recs.append((t, desired))
        horizon = max(window_down, window_up)
        self._recs[key] = recs = [(ts, r) for ts, r in recs if t - ts <= horizon]
        up_rec = min((r for ts, r in recs if t - ts <= window_up), default=desired)
        down_rec = max((r for ts, r in recs if t - ts <= window_down), default=desired)
        out = current
        if desired > current:
            out = max(current, min(desired, up_rec))
        elif desired < current:
            out = min(current, max(desired, down_rec))
        # rate policies (kube defaults: up max(100%, 4 pods)/15s; down 100%/15s)
        ev = [(ts, ch) for ts, ch in self._events.get(key, []) if t - ts <= 600]
        self._events[key] = ev
        if out > current:
            pols = up.get("policies") or [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                          {"type": "Pods", "value": 4, "periodSeconds": 15}]
            limits = []
            for p in pols:
                added = sum(ch for ts, ch in ev if ch > 0 and t - ts <= p["periodSeconds"])
                base = current - added
                limits.append(base + (p["value"] if p["type"] == "Pods" else math.ceil(base * p["value"] / 100)))
            cap = min(limits) if up.get("selectPolicy") == "Min" else max(limits)
            out = min(out, max(cap, current))
        elif out < current:
            pols = down.get("policies") or [{"type": "Percent", "value": 100, "periodSeconds": 15}]
            limits = []
            for p in pols:
                removed = -sum(ch for ts, ch in ev if ch < 0 and t - ts <= p["periodSeconds"])
                base = current + removed
                limits.append(base - (p["value"] if p["type"] == "Pods" else math.floor(base * p["value"] / 100)))
            floor = max(limits) if down.get("selectPolicy") == "Min" else min(limits)
            out = max(out, min(floor, current))
        return out

    async def _write(self, hpa: dict, status: dict) -> None:
        status = {k: v for k, v in status.items() if v is not None}
        if status == (hpa.get("status") or {}):
            return
        cur = self.hpas.get(f"{hpa['metadata']['namespace']}/{hpa['metadata']['name']}") or hpa
        new = copy.deepcopy(cur)
        new["status"] = status
        try:
            await self.client.update_status(R.HPAS, new)
        except NotFoundError:
            pass
        except ApiError as exc:
            log.debug("hpa status: %s", exc)


_ = asyncio
