"""Controller throughput: a Deployment scaled 0 -> N replicas on M simulated nodes (time until all
pods are Running and Ready), then a rolling update of all N replicas (time until ``kubectl rollout
status`` would report success). The API server, simulated nodes, scheduler and controller manager
run as separate processes (``tug cluster …``), as in a real cluster.

    .venv/bin/python bench/controllers.py [--replicas 1000] [--nodes 100] [--max-surge 25%]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from cluster_common import ApiServerProcess
from tugboat.cluster.client import ApiClient, load_kubeconfig
from tugboat.cluster.client import resources as R
from tugboat.cluster.client.informer import Informer
from tugboat.cluster.client.util import pod_ready


def component(kubeconfig: str, logdir: str, name: str, *extra: str) -> subprocess.Popen:
    log = open(os.path.join(logdir, f"{name}.log"), "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "tugboat.cli.main", "cluster", name, "--kubeconfig", kubeconfig,
                             *extra], stdout=log, stderr=subprocess.STDOUT)


async def run(args: argparse.Namespace) -> dict:
    res: dict = {"replicas": args.replicas, "nodes": args.nodes}
    with ApiServerProcess("real") as api:
        kc = api.kubeconfig
        procs = [
            component(kc, api.dir, "simulate-nodes", "--count", str(args.nodes), "--no-metrics", "--cpu", "64",
                      "--memory", "256Gi", "--max-pods", "110"),
            component(kc, api.dir, "scheduler", "--leader-elect", "false"),
            component(kc, api.dir, "controller-manager", "--leader-elect", "false", "--controllers",
                      "deployment,replicaset,garbagecollector"),
        ]
        c = ApiClient(load_kubeconfig(kc))
        try:
            t0 = time.time()
            while True:
                nodes = (await c.list(R.NODES))["items"]
                if len(nodes) >= args.nodes:
                    break
                if time.time() - t0 > 120:
                    raise RuntimeError("simulated nodes did not register")
                await asyncio.sleep(0.2)
            res["node_registration_s"] = round(time.time() - t0, 2)
            await asyncio.sleep(1.0)  # let the scheduler and controllers sync their caches
            dep = {"metadata": {"name": "bench"}, "spec": {
                "replicas": 0, "selector": {"matchLabels": {"app": "bench"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": args.max_surge,
                                                                        "maxUnavailable": args.max_unavailable}},
                "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [
                    {"name": "c", "image": "registry.k8s.io/pause:3.10",
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}
            await c.create(R.DEPLOYMENTS, dep)
            await asyncio.sleep(0.5)

            pods_inf = Informer(c, R.PODS, "default", label_selector="app=bench")
            pods_inf.start()
            await pods_inf.wait_synced(60)
            dep_inf = Informer(c, R.DEPLOYMENTS, "default")
            dep_inf.start()
            await dep_inf.wait_synced(60)

            async def pods_state() -> tuple[int, int, int]:
                live = [p for p in pods_inf.store.values() if not p["metadata"].get("deletionTimestamp")]
                return (len(live), sum(1 for p in live if p["spec"].get("nodeName")),
                        sum(1 for p in live if (p.get("status") or {}).get("phase") == "Running" and pod_ready(p)))

            t0 = time.time()
            await c.patch(R.DEPLOYMENTS, "bench", {"spec": {"replicas": args.replicas}}, "default",
                          subresource="scale")
            marks: dict[str, float] = {}
            while True:
                created, scheduled, running = await pods_state()
                now = time.time() - t0
                if created >= args.replicas:
                    marks.setdefault("all_created_s", now)
                if scheduled >= args.replicas:
                    marks.setdefault("all_scheduled_s", now)
                if running >= args.replicas:
                    marks.setdefault("all_running_s", now)
                    break
                if now > args.timeout:
                    raise RuntimeError(f"scale-up timed out: {created} created, {scheduled} scheduled, {running} running")
                await asyncio.sleep(0.05)
            res["scale_up"] = {k: round(v, 2) for k, v in marks.items()}
            res["scale_up"]["pods_per_s"] = round(args.replicas / marks["all_running_s"], 1)

            async def rolled_out() -> bool:
                d = dep_inf.get("default/bench")
                if d is None:
                    return False
                s = d.get("status") or {}
                return (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
                        and s.get("updatedReplicas") == args.replicas and s.get("replicas") == args.replicas
                        and s.get("availableReplicas") == args.replicas)

            while not await rolled_out():
                await asyncio.sleep(0.05)
            t0 = time.time()
            await c.patch(R.DEPLOYMENTS, "bench", {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}}, "default",
                content_type="application/strategic-merge-patch+json")
            await asyncio.sleep(0.2)
            min_avail = args.replicas
            while not await rolled_out():
                d = dep_inf.get("default/bench") or {}
                min_avail = min(min_avail, int((d.get("status") or {}).get("availableReplicas") or 0))
                if time.time() - t0 > args.timeout:
                    raise RuntimeError("rolling update timed out")
                await asyncio.sleep(0.05)
            took = time.time() - t0
            await pods_inf.stop()
            await dep_inf.stop()
            res["rolling_update"] = {"rolled_out_s": round(took, 2), "pods_per_s": round(args.replicas / took, 1),
                                     "min_available_observed": min_avail, "max_surge": args.max_surge,
                                     "max_unavailable": args.max_unavailable}
        finally:
            await c.close()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--max-surge", default="25%")
    ap.add_argument("--max-unavailable", default="25%")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--scheduler-json", help="a bench/scheduler.py result to print side by side")
    args = ap.parse_args()
    res = asyncio.run(run(args))
    out = {"controllers": res}
    if args.scheduler_json:
        with open(args.scheduler_json) as f:
            out["scheduler"] = json.load(f)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
