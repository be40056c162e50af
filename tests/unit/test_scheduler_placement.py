"""Scheduler placement against the real API server with simulated nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, pod  # noqa: F401

from tugboat.cluster.client import resources as R


async def _node_of(c: Cluster, name: str) -> str | None:
    p = await c.client.get(R.PODS, name, "default")
    return p["spec"].get("nodeName")


async def _all_bound(c: Cluster, names: list[str]) -> dict[str, str] | None:
    out = {}
    for n in names:
        node = await _node_of(c, n)
        if not node:
            return None
        out[n] = node
    return out


async def _scheduled_condition(c: Cluster, name: str) -> dict | None:
    p = await c.client.get(R.PODS, name, "default")
    for cond in p["status"].get("conditions") or []:
        if cond["type"] == "PodScheduled" and cond["status"] == "False":
            return cond
    return None



async def _scheduler_sees(c: Cluster, what: str, check: Callable[[], bool]) -> None:
    """Wait until the scheduler's informers hold a change just made (instead of a fixed sleep)."""

    async def seen() -> bool:
        return check()

    await c.wait_for(seen, what=f"the scheduler to see {what}")

async def test_unschedulable_message_event_and_retry_on_cluster_change(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=[], node_kw={"cpu": "2", "memory": "4Gi"})
    await c.client.patch(R.NODES, "sim-node-2", {"spec": {"taints": [{"key": "dedicated", "value": "gpu",
                                                                       "effect": "NoSchedule"}]}})
    await _scheduler_sees(c, "the taint", lambda: bool(((c.scheduler.nodes.get("sim-node-2") or {}).get("spec")
                                                           or {}).get("taints")))
    await c.client.create(R.PODS, pod("big", cpu="3"))
    cond = await c.wait_for(lambda: _scheduled_condition(c, "big"), what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith(
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}."), cond
    assert "preemption: 0/3 nodes are available" in cond["message"]

    async def event() -> list[dict]:
        evs = (await c.client.list(R.EVENTS, "default"))["items"]
        return [e for e in evs if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "big"
                and e["type"] == "Warning"]

    evs = await c.wait_for(event, what="FailedScheduling event")
    assert evs[0]["message"] == cond["message"]
    assert evs[0]["source"]["component"] == "default-scheduler"
    # the cluster changes: a bigger node appears and the pending pod is retried there
    await c.client.create(R.NODES, {"metadata": {"name": "big-node", "labels": {"kubernetes.io/hostname": "big-node"}},
                                    "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                                               "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"}}})
    assert await c.wait_for(lambda: _node_of(c, "big"), what="retry") == "big-node"

    async def scheduled_event() -> bool:
        evs = (await c.client.list(R.EVENTS, "default"))["items"]
        return any(e["reason"] == "Scheduled" and e["message"] == "Successfully assigned default/big to big-node"
                   for e in evs)

    await c.wait_for(scheduled_event, what="Scheduled event")


async def test_taints_tolerations_selectors_and_node_affinity(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=[])
    await c.client.patch(R.NODES, "sim-node-0", {"metadata": {"labels": {"disk": "ssd"}},
                                                 "spec": {"taints": [{"key": "dedicated", "value": "db",
                                                                      "effect": "NoSchedule"}]}})
    await c.client.patch(R.NODES, "sim-node-1", {"metadata": {"labels": {"disk": "ssd", "tier": "gold"}}})
    await c.client.patch(R.NODES, "sim-node-2", {"spec": {"unschedulable": True}})

    def nodes_changed() -> bool:
        n0, n1, n2 = (c.scheduler.nodes.get(f"sim-node-{i}") or {} for i in range(3))
        return bool((n0.get("spec") or {}).get("taints") and (n1.get("metadata") or {}).get("labels", {}).get("tier")
                    and (n2.get("spec") or {}).get("unschedulable"))

    await _scheduler_sees(c, "the node changes", nodes_changed)
    # plain pods avoid the tainted and the cordoned node
    names = [f"plain-{i}" for i in range(4)]
    for n in names:
        await c.client.create(R.PODS, pod(n))
    placed = await c.wait_for(lambda: _all_bound(c, names), what="plain pods")
    assert set(placed.values()) == {"sim-node-1"}
    # a toleration plus a nodeSelector lands on the tainted node
    tol = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]
    await c.client.create(R.PODS, pod("db", tolerations=tol, nodeSelector={"disk": "ssd"},
                                      affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                          "nodeSelectorTerms": [{"matchExpressions": [
                                              {"key": "tier", "operator": "DoesNotExist"}]}]}}}))
    assert await c.wait_for(lambda: _node_of(c, "db"), what="db pod") == "sim-node-0"
    # preferred node affinity picks the preferred node among feasible ones
    for i in range(3):
        await c.client.create(R.PODS, pod(f"pref-{i}", tolerations=tol, affinity={"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                     "values": ["gold"]}]}}]}}))
    placed = await c.wait_for(lambda: _all_bound(c, [f"pref-{i}" for i in range(3)]), what="preferred")
    assert set(placed.values()) == {"sim-node-1"}
    # nothing matches: the reasons are counted per node
    await c.client.create(R.PODS, pod("nowhere", nodeSelector={"disk": "hdd"}))
    cond = await c.wait_for(lambda: _scheduled_condition(c, "nowhere"), what="nowhere unschedulable")
    assert cond["message"].startswith("0/3 nodes are available: ")
    assert "2 node(s) didn't match Pod's node affinity/selector" in cond["message"]
    assert "1 node(s) were unschedulable" in cond["message"]


async def test_pod_affinity_anti_affinity_and_topology_spread(cluster: Cluster) -> None:
    c = await cluster.start(nodes=6, controllers=[])
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    names = [f"cache-{i}" for i in range(6)]
    for n in names:
        await c.client.create(R.PODS, pod(n, labels={"app": "cache"}, affinity=anti))
    placed = await c.wait_for(lambda: _all_bound(c, names), what="anti-affinity pods")
    assert len(set(placed.values())) == 6
    await c.client.create(R.PODS, pod("cache-extra", labels={"app": "cache"}, affinity=anti))
    cond = await c.wait_for(lambda: _scheduled_condition(c, "cache-extra"), what="7th cache pod")
    assert "6 node(s) didn't match pod anti-affinity rules" in cond["message"]
    # pod affinity: co-locate with cache-3
    await c.client.patch(R.PODS, "cache-3", {"metadata": {"labels": {"app": "cache", "leader": "yes"}}}, "default")
    await _scheduler_sees(c, "the leader label", lambda: ((c.scheduler.pods.get("default/cache-3") or {})
                                                          .get("metadata") or {}).get("labels", {}).get("leader") == "yes")
    await c.client.create(R.PODS, pod("sidecar", affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"leader": "yes"}}, "topologyKey": "kubernetes.io/hostname"}]}}))
    assert await c.wait_for(lambda: _node_of(c, "sidecar"), what="sidecar") == placed["cache-3"]
    # topology spread over zones (sim nodes are in zone-0..2, two nodes each)
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "spread"}}}]
    names = [f"spread-{i}" for i in range(9)]
    for n in names:
        await c.client.create(R.PODS, pod(n, labels={"app": "spread"}, topologySpreadConstraints=spread))
    placed = await c.wait_for(lambda: _all_bound(c, names), what="spread pods")
    zones = Counter(int(node.rsplit("-", 1)[1]) % 3 for node in placed.values())
    assert sorted(zones.values()) == [3, 3, 3], zones


async def test_host_ports_and_priority_preemption(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=[], node_kw={"cpu": "2", "memory": "4Gi"})
    hp = [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    for i in range(3):
        await c.client.create(R.PODS, {"metadata": {"name": f"hp-{i}"}, "spec": {"containers": hp}})
    cond = await c.wait_for(lambda: _scheduled_condition(c, "hp-2"), what="third host-port pod")
    assert "2 node(s) didn't have free ports for the requested pod ports" in cond["message"]
    placed = await _all_bound(c, ["hp-0", "hp-1"])
    assert placed and len(set(placed.values())) == 2
    # fill the nodes with low-priority pods, then a high-priority pod preempts one
    low = [f"low-{i}" for i in range(4)]
    for n in low:
        await c.client.create(R.PODS, pod(n, cpu="900m"))
    await c.wait_for(lambda: _all_bound(c, low), what="low priority pods")
    await c.client.create(R.PODS, pod("vip", cpu="1500m", priority=1000))

    async def vip_running() -> str | None:
        return await _node_of(c, "vip")

    node = await c.wait_for(vip_running, timeout=30, what="preemptor bound")
    remaining = [p for p in (await c.client.list(R.PODS, "default"))["items"] if p["metadata"]["name"].startswith("low-")]
    assert len(remaining) == 2
    assert not any(p["spec"].get("nodeName") == node for p in remaining)


async def test_volume_node_affinity(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=[])
    pv = {"metadata": {"name": "pv-local"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
        "local": {"path": "/data"},
        "claimRef": {"namespace": "default", "name": "claim"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["sim-node-1"]}]}]}}}}
    await c.client.create(R.PVS, pv)
    await c.client.create(R.PVCS, {"metadata": {"name": "claim"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "pv-local",
        "resources": {"requests": {"storage": "1Gi"}}}})
    await _scheduler_sees(c, "the volume and claim", lambda: c.scheduler.pvs.get("pv-local") is not None
                          and c.scheduler.pvcs.get_by("default", "claim") is not None)
    names = [f"vol-{i}" for i in range(3)]
    for n in names:
        await c.client.create(R.PODS, pod(n, volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "claim"}}]))
    placed = await c.wait_for(lambda: _all_bound(c, names), what="pods with the local volume")
    assert set(placed.values()) == {"sim-node-1"}
    # a claim that does not exist keeps the pod pending with kube's message
    await c.client.create(R.PODS, pod("novol", volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "nope"}}]))
    cond = await c.wait_for(lambda: _scheduled_condition(c, "novol"), what="missing claim")
    assert 'persistentvolumeclaim "nope" not found' in cond["message"]
