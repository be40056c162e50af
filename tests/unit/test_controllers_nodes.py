"""Node lifecycle: a node that stops heartbeating goes NotReady/Unknown, is tainted, and its pods
are evicted and replaced on the other nodes."""

from __future__ import annotations

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import pod_ready


async def test_dead_node_is_tainted_and_its_pods_move(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=["deployment", "replicaset", "nodelifecycle"])
    dep = deployment("mover", 6)
    dep["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]
    await c.client.create(R.DEPLOYMENTS, dep)

    async def spread() -> dict | None:
        pods = (await c.client.list(R.PODS, "default", label_selector="app=mover"))["items"]
        nodes = {p["spec"].get("nodeName") for p in pods if pod_ready(p)}
        return pods if len(pods) == 6 and all(pod_ready(p) for p in pods) and len(nodes) >= 2 else None

    pods = await c.wait_for(spread, what="pods on several nodes")
    victim = max({p["spec"]["nodeName"] for p in pods}, key=lambda n: sum(p["spec"]["nodeName"] == n for p in pods))
    assert c.sim is not None
    c.sim.stop_node(victim)

    async def tainted() -> dict | None:
        node = await c.client.get(R.NODES, victim)
        ready = next(x for x in node["status"]["conditions"] if x["type"] == "Ready")
        taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
        ok = ready["status"] == "Unknown" and ("node.kubernetes.io/unreachable", "NoExecute") in taints
        return node if ok else None

    node = await c.wait_for(tainted, timeout=20, what="node NotReady and tainted")
    assert ("node.kubernetes.io/unreachable", "NoSchedule") in {(t["key"], t["effect"]) for t in node["spec"]["taints"]}

    async def moved() -> bool:
        pods = (await c.client.list(R.PODS, "default", label_selector="app=mover"))["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 6 and all(pod_ready(p) and p["spec"]["nodeName"] != victim for p in live)

    await c.wait_for(moved, timeout=30, what="pods moved off the dead node")
    # the node comes back: Ready again and the taints are removed
    c.sim.resume_node(victim)

    async def healthy() -> bool:
        n = await c.client.get(R.NODES, victim)
        ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
        return ready["status"] == "True" and not [t for t in n["spec"].get("taints") or []
                                                  if t["key"].startswith("node.kubernetes.io/")]

    await c.wait_for(healthy, timeout=20, what="node healthy again")

    # pods evicted while the node was away are finished once it is back
    async def no_leftovers() -> bool:
        pods = (await c.client.list(R.PODS, "default", label_selector="app=mover"))["items"]
        return len(pods) == 6 and not any(p["metadata"].get("deletionTimestamp") for p in pods)

    await c.wait_for(no_leftovers, timeout=20, what="terminating pods cleaned up")


async def test_cordon_taints_node(cluster: Cluster) -> None:
    c = await cluster.start(nodes=1, controllers=["nodelifecycle"], scheduler=False)
    await c.client.patch(R.NODES, "sim-node-0", {"spec": {"unschedulable": True}})

    async def taints() -> set:
        n = await c.client.get(R.NODES, "sim-node-0")
        return {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}

    await c.wait_for(lambda: _has(taints, True), what="unschedulable taint")
    await c.client.patch(R.NODES, "sim-node-0", {"spec": {"unschedulable": None}})
    await c.wait_for(lambda: _has(taints, False), what="taint removed")


async def _has(taints, want: bool) -> bool:
    return (("node.kubernetes.io/unschedulable", "NoSchedule") in await taints()) == want
