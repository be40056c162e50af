"""Scheduler throughput: N simulated nodes, P pending pods with requests; pods scheduled per second
and the p99 time from creation to binding.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--pods 10000] [--anti-affinity] [--api real|fake]

The pods are created first (pending), then the scheduler starts: "pods/s" is bound pods divided
by the time from scheduler start to the last successful binding (as kube's scheduler_perf does).
A second phase creates pods at a steady rate while the scheduler runs and reports p50/p99 from
creation (client clock, request sent) to binding confirmed by the API server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from cluster_common import ApiServerProcess
from tugboat.cluster.client import ApiClient, load_kubeconfig
from tugboat.cluster.client import resources as R
from tugboat.cluster.scheduler.scheduler import Scheduler
from tugboat.cluster.sim.nodes import SimNodes


def pod(name: str, anti: bool, ns: str = "bench") -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    labels = {"app": name.rsplit("-", 1)[0] if anti else "bench", "g": str(hash(name) % 10)}
    if anti:
        labels = {"app": "bench", "color": f"c{int(name.rsplit('-', 1)[1]) % 10}"}
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"color": labels["color"]}}, "topologyKey": "kubernetes.io/hostname"}]}}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}


async def create_pods(c: ApiClient, names: list[str], anti: bool, conc: int = 48) -> dict[str, float]:
    sent: dict[str, float] = {}
    sem = asyncio.Semaphore(conc)

    async def one(n: str) -> None:
        async with sem:
            sent[n] = time.time()
            await c.create(R.PODS, pod(n, anti))

    await asyncio.gather(*(one(n) for n in names))
    return sent


async def run_decisions_only(args: argparse.Namespace) -> dict:
    """The scheduler's decision path alone: nodes and pods fed straight into its cache, binding
    replaced by the in-memory assume (no API server, no HTTP)."""
    from tugboat.cluster.client.kubeconfig import KubeConfig

    sc = Scheduler(ApiClient(KubeConfig(server="http://127.0.0.1:9")))
    sim = SimNodes(None, args.nodes, cpu="64", memory="512Gi")  # type: ignore[arg-type]
    for i, n in enumerate(sim.names):
        sc.cache.set_node(sim.node_object(i, n))

    def assume(p: dict, key: str, node: str) -> None:
        sc.cache.assume(p, node)
        sc.scheduled += 1

    sc._assume_and_bind = assume  # type: ignore[method-assign]
    pods = []
    for i in range(args.pods):
        p = pod(f"p-{i}", args.anti_affinity)
        p["metadata"]["uid"] = str(i)
        pods.append(p)
    t0 = time.perf_counter()
    for p in pods:
        k = f"bench/{p['metadata']['name']}"
        sc.pending[k] = p
        sc.schedule_one(k)
    dt = time.perf_counter() - t0
    await sc.client.close()
    return {"api": "none (decisions only)", "nodes": args.nodes, "pods": args.pods,
            "anti_affinity": args.anti_affinity, "scheduled": sc.scheduled, "seconds": round(dt, 2),
            "pods_per_s": round(sc.scheduled / dt, 1)}


async def run(args: argparse.Namespace) -> dict:
    if args.api == "none":
        return await run_decisions_only(args)
    with ApiServerProcess(args.api) as api:
        c = ApiClient(load_kubeconfig(api.kubeconfig), max_connections=64)
        sim = SimNodes(c, args.nodes, cpu="64", memory="512Gi", max_pods=110, metrics=False)
        t0 = time.time()
        await sim.register()
        t_nodes = time.time() - t0
        try:
            await c.create(R.NAMESPACES, {"metadata": {"name": "bench"}})
        except Exception:
            pass
        names = [f"p-{i}" for i in range(args.pods)]
        t0 = time.time()
        await create_pods(c, names, args.anti_affinity)
        t_create = time.time() - t0
        sc = Scheduler(ApiClient(load_kubeconfig(api.kubeconfig), max_connections=args.bind_concurrency),
                       bind_concurrency=args.bind_concurrency)
        t_start = time.time()
        task = asyncio.ensure_future(sc.run())
        while len(sc.bound_at) < args.pods and not task.done():
            await asyncio.sleep(0.05)
            if time.time() - t_start > args.timeout:
                break
        bound = len(sc.bound_at)
        t_last = max(sc.bound_at.values()) if sc.bound_at else time.time()
        first_decision_ready = t_start
        burst = bound / (t_last - first_decision_ready) if bound else 0.0
        # phase 2: steady creation while the scheduler runs
        steady_names = [f"s-{i}" for i in range(args.steady)]
        rate = args.steady_rate
        sent: dict[str, float] = {}

        async def creator() -> None:
            sem = asyncio.Semaphore(32)
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def one(i: int, n: str) -> None:
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                async with sem:
                    sent[n] = time.time()
                    await c.create(R.PODS, pod(n, args.anti_affinity))

            await asyncio.gather(*(one(i, n) for i, n in enumerate(steady_names)))

        if args.steady:
            await creator()
            t_wait = time.time()
            while any(f"bench/{n}" not in sc.bound_at for n in steady_names) and time.time() - t_wait < 60:
                await asyncio.sleep(0.05)
        lat = sorted(sc.bound_at[f"bench/{n}"] - sent[n] for n in steady_names if f"bench/{n}" in sc.bound_at)
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        await c.close()
        await sc.client.close()
        return {
            "api": args.api,
            "nodes": args.nodes,
            "pods": args.pods,
            "anti_affinity": args.anti_affinity,
            "node_registration_s": round(t_nodes, 2),
            "pod_creation_s": round(t_create, 2),
            "bound": bound,
            "schedule_all_s": round(t_last - t_start, 2),
            "pods_per_s": round(burst, 1),
            "steady_rate": rate if args.steady else 0,
            "steady_p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "steady_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--anti-affinity", action="store_true")
    ap.add_argument("--api", choices=["real", "fake", "none"], default="real",
                    help="real: tug cluster apiserver; fake: in-memory test server; none: decisions only")
    ap.add_argument("--bind-concurrency", type=int, default=64)
    ap.add_argument("--steady", type=int, default=1000, help="pods created at --steady-rate for latency")
    ap.add_argument("--steady-rate", type=float, default=100.0)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    res = asyncio.run(run(args))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
