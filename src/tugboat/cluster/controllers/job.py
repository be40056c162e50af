"""Job: run pods to ``completions`` with at most ``parallelism`` at a time; fail after
``backoffLimit`` failed pods or ``activeDeadlineSeconds``; Complete/Failed conditions."""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.client.util import condition, now, parse_time, pod_ready, set_condition
from tugboat.cluster.controllers.base import Controller, Expectations, owned_by
from tugboat.cluster.controllers.replicaset import create_pods, deletion_rank, pod_from_template

log = logging.getLogger(__name__)


INDEX = "batch.kubernetes.io/job-completion-index"


def pod_index(pod: dict) -> int | None:
    v = (pod["metadata"].get("annotations") or {}).get(INDEX) or (pod["metadata"].get("labels") or {}).get(INDEX)
    return int(v) if v is not None and str(v).isdigit() else None


def parse_indexes(s: str) -> set[int]:
    out: set[int] = set()
    for part in s.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.add(int(part))
    return out


def format_indexes(idx: set[int]) -> str:
    """kube's completedIndexes: sorted, ranges collapsed ("0-2,4")."""
    out, run = [], []
    for i in sorted(idx):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def indexed_pod(tmpl: dict, job: dict, i: int) -> dict:
    pod = pod_from_template(tmpl, job, generate=f"{job['metadata']['name']}-{i}-")
    pod["metadata"]["annotations"] = {**pod["metadata"]["annotations"], INDEX: str(i)}
    pod["metadata"]["labels"] = {**pod["metadata"]["labels"], INDEX: str(i)}
    spec = pod["spec"]
    spec.setdefault("hostname", f"{job['metadata']['name']}-{i}")
    for c in spec.get("containers") or []:
        c["env"] = [*(c.get("env") or []), {"name": "JOB_COMPLETION_INDEX", "valueFrom": {
            "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}}]
    return pod


class JobController(Controller):
    name = "job"

    def setup(self) -> None:
        self.jobs = self.ctx.informer(R.JOBS)
        self.pods = self.ctx.informer(R.PODS)
        self.exp = Expectations()
        self.jobs.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(self._pod_add, lambda o, n: self.enqueue_owner("Job", n), self._pod_del)

    def _pod_add(self, pod: dict) -> None:
        ref = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"), None)
        if ref:
            k = f"{pod['metadata']['namespace']}/{ref['name']}"
            self.exp.observed_add(k)
            self.queue.add(k)

    def _pod_del(self, pod: dict) -> None:
        self.enqueue_owner("Job", pod)

    async def sync(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            self.exp.forget(key)
            return
        job = copy.deepcopy(job)
        spec, st = job.get("spec") or {}, copy.deepcopy(job.get("status") or {})
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pods = owned_by(self.pods, job)
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        indexed = spec.get("completionMode") == "Indexed" and spec.get("completions") is not None
        done_idx: set[int] = parse_indexes(st.get("completedIndexes") or "") if indexed else set()
        if indexed:
            done_idx |= {i for p in pods if p["status"].get("phase") == "Succeeded" and (i := pod_index(p)) is not None}
            st["completedIndexes"] = format_indexes(done_idx)
            if not done_idx:
                st.pop("completedIndexes")
        succeeded = max(int(st.get("succeeded") or 0), sum(1 for p in pods if p["status"].get("phase") == "Succeeded"))
        if indexed:
            succeeded = len(done_idx)
        failed = max(int(st.get("failed") or 0), sum(1 for p in pods if p["status"].get("phase") == "Failed"))
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in st.get("conditions") or [])
        if finished:
            await self._ttl(job, st)
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        backoff = int(spec.get("backoffLimit", 6))
        if spec.get("suspend"):
            parallelism = 0
        if not st.get("startTime") and not spec.get("suspend"):
            st["startTime"] = now()
        fail_reason = None
        if not finished:
            if failed > backoff:
                fail_reason = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif spec.get("activeDeadlineSeconds") and st.get("startTime") and \
                    time.time() - parse_time(st["startTime"]) >= int(spec["activeDeadlineSeconds"]):
                fail_reason = ("DeadlineExceeded", "Job was active longer than specified deadline")
        complete = (succeeded >= int(completions) if completions is not None
                    else succeeded > 0 and not active)
        if finished or fail_reason or complete:
            for p in active:
                try:
                    await self.client.delete(R.PODS, p["metadata"]["name"], ns)
                except NotFoundError:
                    pass
            active = []
            if not finished:
                if fail_reason:
                    set_condition(st, "FailureTarget", "True", fail_reason[0], fail_reason[1], probe_time=True)
                    set_condition(st, "Failed", "True", fail_reason[0], fail_reason[1], probe_time=True)
                    self.recorder.event(job, "Warning", fail_reason[0], fail_reason[1])
                else:
                    set_condition(st, "SuccessCriteriaMet", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", probe_time=True)
                    set_condition(st, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", probe_time=True)
                    st["completionTime"] = now()
                    self.recorder.event(job, "Normal", "Completed", "Job completed")
        elif self.exp.satisfied(key) and not self._backing_off(key, pods, failed):
            if completions is not None:
                want = min(parallelism, int(completions) - succeeded)
            else:
                want = parallelism if succeeded == 0 else 0
            want = max(0, want)
            if len(active) < want:
                n = want - len(active)
                self.exp.expect(key, adds=n)
                tmpl = copy.deepcopy(spec.get("template") or {})
                labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
                uid = job["metadata"]["uid"]
                labels.setdefault("batch.kubernetes.io/controller-uid", uid)
                labels.setdefault("batch.kubernetes.io/job-name", name)
                labels.setdefault("controller-uid", uid)
                labels.setdefault("job-name", name)
                if indexed:
                    busy = {pod_index(p) for p in active} | done_idx
                    todo = [i for i in range(int(completions)) if i not in busy][:n]
                    pods_new = [indexed_pod(tmpl, job, i) for i in todo]
                    for _ in range(n - len(todo)):
                        self.exp.observed_add(key)
                    n = len(todo)
                else:
                    pods_new = [pod_from_template(tmpl, job) for _ in range(n)]

                def failed_create(e: BaseException) -> None:
                    self.exp.observed_add(key)
                    self.recorder.event(job, "Warning", "FailedCreate", f"Error creating: {e}")

                def created(p: dict) -> None:
                    self.recorder.event(job, "Normal", "SuccessfulCreate", f"Created pod: {p['metadata']['name']}")

                made = await create_pods(self.client, pods_new, ns, failed_create, created)
                for _ in range(n - made):
                    self.exp.observed_add(key)
            elif len(active) > want:
                for p in sorted(active, key=deletion_rank)[: len(active) - want]:
                    try:
                        await self.client.delete(R.PODS, p["metadata"]["name"], ns)
                    except (NotFoundError, ConflictError):
                        pass
            if spec.get("activeDeadlineSeconds") and st.get("startTime"):
                left = parse_time(st["startTime"]) + int(spec["activeDeadlineSeconds"]) - time.time()
                self.enqueue_after(key, max(0.1, left))
        st["active"] = len(active)
        st["ready"] = sum(1 for p in active if pod_ready(p))
        st["succeeded"] = succeeded
        st["failed"] = failed
        st.setdefault("uncountedTerminatedPods", {})
        st["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
        for k in ("active", "succeeded", "failed", "terminating"):
            if not st[k]:
                st.pop(k)
        if st != (job.get("status") or {}):
            job["status"] = st
            try:
                await self.client.update_status(R.JOBS, job)
            except NotFoundError:
                pass
        _ = condition
        if not finished and (fail_reason or complete):
            await self._ttl(job, st)

    def _backing_off(self, key: str, pods: list[dict], failed: int) -> bool:
        """kube's pod failure back-off: after the n-th failure wait base * 2^(n-1) (≤ 6 min) from
        the last failure before creating replacements."""
        if failed <= 0:
            return False
        last = 0.0
        for p in pods:
            if (p.get("status") or {}).get("phase") == "Failed":
                for cs in (p.get("status") or {}).get("containerStatuses") or []:
                    last = max(last, parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")))
        if not last:
            return False
        delay = min(self.ctx.options.job_backoff_seconds * 2 ** (failed - 1), 360.0)
        left = last + delay - time.time()
        if left > 0:
            self.enqueue_after(key, left + 0.05)
            return True
        return False

    async def _ttl(self, job: dict, st: dict) -> None:
        """ttlSecondsAfterFinished: delete the finished Job (and, in the background, its pods)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        done_at = max((parse_time(c.get("lastTransitionTime")) for c in st.get("conditions") or []
                       if c.get("type") in ("Complete", "Failed")), default=0.0)
        left = (done_at or time.time()) + int(ttl) - time.time()
        if left > 0:
            self.enqueue_after(f"{job['metadata']['namespace']}/{job['metadata']['name']}", left + 0.05)
            return
        try:
            await self.client.delete(R.JOBS, job["metadata"]["name"], job["metadata"]["namespace"],
                                     propagation="Background", preconditions={"uid": job["metadata"]["uid"]})
        except (NotFoundError, ConflictError):
            pass


_ = asyncio
