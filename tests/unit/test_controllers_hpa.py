"""HorizontalPodAutoscaler with synthetic metrics from simulated nodes (metrics.k8s.io)."""

from __future__ import annotations

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R


async def _replicas(c: Cluster) -> int:
    d = await c.client.get(R.DEPLOYMENTS, "web", "default")
    return int(d["spec"]["replicas"])


async def test_hpa_scales_up_under_load_and_down_after_window(cluster: Cluster) -> None:
    c = await cluster.start(nodes=3, controllers=["deployment", "replicaset", "horizontalpodautoscaling"])
    assert c.sim is not None
    await c.client.create(R.DEPLOYMENTS, deployment("web", 2))  # requests cpu 100m

    async def running() -> bool:
        d = await c.client.get(R.DEPLOYMENTS, "web", "default")
        return (d.get("status") or {}).get("availableReplicas") == 2 and len(
            [p for p in c.sim.pods.store.values() if (p["metadata"].get("labels") or {}).get("app") == "web"]) == 2

    await c.wait_for(running, what="2 pods running")
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 8,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 50}}}]}}
    await c.client.create(R.HPAS, hpa)

    def load(cpu: str) -> None:
        for p in c.sim.pods.store.values():
            if (p["metadata"].get("labels") or {}).get("app") == "web":
                c.sim.set_usage(f"default/{p['metadata']['name']}", cpu)

    # within tolerance (55% vs 50% target) nothing changes
    load("55m")

    async def steady() -> bool:
        h = await c.client.get(R.HPAS, "web", "default")
        st = h.get("status") or {}
        return st.get("currentReplicas") == 2 and any(
            x["type"] == "ScalingActive" and x["status"] == "True" for x in st.get("conditions") or [])

    await c.wait_for(steady, what="HPA active at 2 replicas")
    assert await _replicas(c) == 2
    # load: 100m used of 100m requested = 200% of the 50% target -> 2 * 2 = 4 replicas
    load("100m")

    async def scaled_up() -> bool:
        load("100m")  # new pods get the same load
        return await _replicas(c) >= 4

    await c.wait_for(scaled_up, timeout=20, what="scale up")
    async def status_updated() -> bool:
        h = await c.client.get(R.HPAS, "web", "default")
        return (h.get("status") or {}).get("desiredReplicas", 0) >= 4 and bool(h["status"].get("lastScaleTime"))

    await c.wait_for(status_updated, what="HPA status after the rescale")
    evs = (await c.client.list(R.EVENTS, "default"))["items"]
    assert any(e["reason"] == "SuccessfulRescale" and e["message"].startswith("New size: 4; reason: cpu resource "
                                                                             "utilization (percentage of request) above target")
               for e in evs), [e["message"] for e in evs if e["reason"] == "SuccessfulRescale"]
    # load drops: scale down only after the (3 s, test-sized) stabilization window
    up_at = await _replicas(c)
    load("5m")
    import asyncio

    t0 = asyncio.get_running_loop().time()

    async def scaled_down() -> bool:
        load("5m")
        return await _replicas(c) == 1

    await c.wait_for(scaled_down, timeout=30, what="scale down to minReplicas")
    waited = asyncio.get_running_loop().time() - t0
    assert waited >= 2.5, f"scaled down after {waited:.1f}s, before the stabilization window"
    assert up_at >= 4
