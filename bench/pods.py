"""Pod start-up latency, service update propagation and node agent memory on a `tug cluster up` cluster.

    .venv/bin/python bench/pods.py [--pods 30 --nodes 1] [--pods 90 --nodes 3] [--rate 10] [--trace] [--cpu]

Start-up latency: from the pod's POST returning to the agent reporting Ready (image present on
the node), seen through a watch; p50/p99/max over all pods, created 10 at a time. Kubernetes'
SLO is p99 <= 5 s. ``--rate R``: then the same number of pods again, created R per second (as
Kubernetes' density test paces pod creation), after the burst's pods are deleted. Service propagation: from the Service's POST to its ClusterIP being in every
node's nftables map. RSS: VmRSS of each node agent process after the run. ``--trace``: the
median and p99 time from the POST to each step of the agents' pod workers (seen, sandbox,
network, container created/started, status PATCH), from their ``TUG_POD_TRACE`` records, and
when the bench's own watch saw the pod bound to a node (``bound-seen``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.up import cluster_down, cluster_up


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


CREATED: dict[str, float] = {}
AUTOMOUNT = True  # --no-token: pods opt out of the service account token volume (issue #10)
BOUND: dict[str, float] = {}
READY: dict[str, float] = {}


def breakdown(trace_file: str) -> None:
    """Median time from the POST to each step of the agents' pod workers (TUG_POD_TRACE)."""
    steps: dict[str, list[float]] = {"bound-seen": [BOUND[k] - CREATED[k] for k in CREATED if k in BOUND]}
    order: list[str] = ["bound-seen"]
    with open(trace_file) as f:
        for line in f:
            rec = json.loads(line)
            t0 = CREATED.get(rec["pod"])
            if t0 is None:
                continue
            for step, t in rec["steps"]:
                if step not in steps:
                    order.append(step)
                steps.setdefault(step, []).append(t - t0)
            if rec["pod"] in READY:
                steps.setdefault("ready-seen", []).append(READY[rec["pod"]] - t0)
    for step in [*order, "ready-seen"]:
        if steps.get(step):
            print(f"  {step:<22} p50 {pct(steps[step], 50):6.3f} s  p99 {pct(steps[step], 99):6.3f} s")


async def startup(kubeconfig: str, n: int, rate: float = 0.0) -> list[float]:
    async with ApiClient.from_kubeconfig(kubeconfig) as c:
        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        bound: dict[str, float] = {}
        done = asyncio.Event()

        async def watch() -> None:
            lst = await c.list(R.PODS, "default")
            rv = lst.get("metadata", {}).get("resourceVersion") if isinstance(lst, dict) else None
            async for ev in c.watch(R.PODS, "default", resource_version=rv, label_selector="bench=startup"):
                obj = ev.get("object") or {}
                name = obj.get("metadata", {}).get("name")
                if name and name not in bound and (obj.get("spec") or {}).get("nodeName"):
                    bound[name] = time.monotonic()
                if name and name not in ready and any(
                        cd.get("type") == "Ready" and cd.get("status") == "True"
                        for cd in (obj.get("status") or {}).get("conditions") or []):
                    ready[name] = time.monotonic()
                    if len(ready) >= n:
                        done.set()
                        return

        w = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        sem = asyncio.Semaphore(10)

        async def make(i: int) -> None:
            name = f"bench-{i}"
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"bench": "startup"}},
                    "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                        {"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                         "command": ["sleep", "3600"]}]}}
            if not AUTOMOUNT:
                body["spec"]["automountServiceAccountToken"] = False
            if rate:  # paced, as Kubernetes' density test creates pods: i / rate s after the first
                await asyncio.sleep(max(0.0, t_first + i / rate - time.monotonic()))
            async with sem:
                await c.create(R.PODS, body, "default")
                created[name] = time.monotonic()

        t_first = time.monotonic()
        await asyncio.gather(*(make(i) for i in range(n)))
        await asyncio.wait_for(done.wait(), 300)
        w.cancel()
        CREATED.update(created)
        BOUND.update(bound)
        READY.update(ready)
        return [ready[k] - created[k] for k in created if k in ready]


async def delete_pods(kubeconfig: str) -> None:
    """Delete the burst's pods and wait until they are gone (their containers stopped)."""
    async with ApiClient.from_kubeconfig(kubeconfig) as c:
        lst = await c.list(R.PODS, "default", label_selector="bench=startup")
        for p in lst.get("items") or []:
            await c.delete(R.PODS, p["metadata"]["name"], "default")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not (await c.list(R.PODS, "default", label_selector="bench=startup")).get("items"):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("the burst's pods were not deleted within 120 s")


async def propagation(kubeconfig: str, nodes: list[dict], rounds: int = 5) -> list[float]:
    out = []
    async with ApiClient.from_kubeconfig(kubeconfig) as c:
        for r in range(rounds):
            name = f"prop-{r}-{uuid.uuid4().hex[:4]}"
            t0 = time.monotonic()
            svc = await c.create(R.SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                              "spec": {"selector": {"bench": "startup"},
                                                       "ports": [{"port": 80, "targetPort": 8080}]}}, "default")
            vip = svc["spec"]["clusterIP"]
            pending = list(nodes)
            while pending:
                for n in list(pending):
                    cmd = ["nft", "list", "map", "ip", "tugboat-svc", "service-ips"]
                    if n.get("netns"):
                        cmd = ["ip", "netns", "exec", n["netns"], *cmd]
                    if vip in subprocess.run(cmd, capture_output=True, text=True).stdout:
                        pending.remove(n)
                await asyncio.sleep(0.01)
            out.append(time.monotonic() - t0)
    return out


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_of(pid: int) -> tuple[float, float]:
    """(user + system, of reaped children) CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz


def cpu_snapshot(procs: list[dict]) -> dict[str, float]:
    """CPU seconds per cluster component: each process with what it reaped, and the engine's
    create worker (a child of a node agent) on its own line."""
    names = {p["pid"]: p["name"] for p in procs}
    out: dict[str, float] = {}
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in names:
            kids.setdefault(ppid, []).append(int(d))
    for pid, name in names.items():
        role = "node agent" if "-node-" in name else name
        try:
            own, reaped = _cpu_of(pid)
        except (OSError, ValueError):
            continue
        out[role] = out.get(role, 0.0) + own + reaped
        for k in kids.get(pid, []):
            try:
                kown, kreaped = _cpu_of(k)
            except (OSError, ValueError):
                continue
            out[role + " children"] = out.get(role + " children", 0.0) + kown + kreaped
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--trace", action="store_true", help="print where each pod's start-up time goes")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="also measure pods created at this many per second (Kubernetes' density test "
                         "paces creation); 0: only the burst")
    ap.add_argument("--cpu", action="store_true",
                    help="CPU time per pod of each cluster process over the burst (node agent = the "
                         "engine; its children = the engine's create worker and the `ip` helpers)")
    ap.add_argument("--no-token", action="store_true",
                    help="pods without the service account token volume (no TokenRequest, no kube-root-ca.crt)")
    o = ap.parse_args()
    global AUTOMOUNT
    AUTOMOUNT = not o.no_token
    trace = ""
    if o.trace:
        fd, trace = tempfile.mkstemp(prefix="tug-pod-trace-")
        os.close(fd)
        os.environ["TUG_POD_TRACE"] = trace
    base = tempfile.mkdtemp(prefix="tug-bench-pods-")
    state_dir = os.path.join(base, "c")
    name = "b" + uuid.uuid4().hex[:5]
    try:
        t0 = time.monotonic()
        st = cluster_up(state_dir=state_dir, nodes=o.nodes, name=name, isolated=True,
                        subnet=f"172.29.{random.randint(1, 250)}.0/24", cluster_cidr="10.246.0.0/16")
        print(f"cluster up ({o.nodes} nodes): {time.monotonic() - t0:.1f} s")
        cpu0 = cpu_snapshot(st["processes"]) if o.cpu else {}
        lat = asyncio.run(startup(st["kubeconfig"], o.pods))
        print(f"pod startup ({o.pods} pods, {o.nodes} node(s)): p50 {pct(lat, 50):.3f} s, p99 {pct(lat, 99):.3f} s, "
              f"max {max(lat):.3f} s")
        if o.cpu:
            cpu1 = cpu_snapshot(st["processes"])
            per = {k: (v - cpu0.get(k, 0.0)) / o.pods * 1000 for k, v in cpu1.items()}
            print("CPU per pod over the burst: " + ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(per.items()))
                  + f"; total {sum(per.values()):.0f} ms")
        if trace:
            breakdown(trace)
            os.unlink(trace)
        paced: list[float] = []
        if o.rate:
            asyncio.run(delete_pods(st["kubeconfig"]))
            paced = asyncio.run(startup(st["kubeconfig"], o.pods, o.rate))
            print(f"pod startup ({o.pods} pods at {o.rate:g}/s, {o.nodes} node(s)): p50 {pct(paced, 50):.3f} s, "
                  f"p99 {pct(paced, 99):.3f} s, max {max(paced):.3f} s")
        prop = asyncio.run(propagation(st["kubeconfig"], st["nodes"]))
        print(f"service -> nftables on all nodes: p50 {pct(prop, 50) * 1000:.0f} ms, max {max(prop) * 1000:.0f} ms")
        agents = [p for p in st["processes"] if p["name"].startswith(f"{name}-node-")]
        rss = [rss_mib(p["pid"]) for p in agents]
        print(f"node agent RSS with {o.pods // max(1, o.nodes)} pods each: "
              + ", ".join(f"{r:.0f} MiB" for r in rss))
        print(json.dumps({"pods": o.pods, "nodes": o.nodes, "p50": pct(lat, 50), "p99": pct(lat, 99),
                          **({"rate": o.rate, "paced_p50": pct(paced, 50), "paced_p99": pct(paced, 99)} if paced else {}),
                          "propagation_max_s": max(prop), "agent_rss_mib": rss}))
    finally:
        t1 = time.monotonic()
        problems = cluster_down(state_dir=state_dir)
        print(f"cluster down: {time.monotonic() - t1:.1f} s{' problems: ' + str(problems) if problems else ''}")
        os.rmdir(base) if os.path.isdir(base) and not os.listdir(base) else None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
