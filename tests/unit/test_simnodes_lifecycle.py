"""Simulated nodes against the real API server: registration, heartbeats, pod lifecycle,
metrics, and the CLI commands (simulate-nodes + scheduler as processes)."""

from __future__ import annotations

import os

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment, pod  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import pod_ready
from tugboat.cluster.controllers.launcher import spawn_control_plane, stop_processes


async def test_nodes_register_heartbeat_run_pods_and_report_metrics(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=[], node_kw={"zones": 2})
    nodes = (await c.client.list(R.NODES))["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["sim-node-0", "sim-node-1"]
    n0 = next(n for n in nodes if n["metadata"]["name"] == "sim-node-0")
    assert n0["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-0"
    assert n0["status"]["allocatable"]["cpu"] == "32"
    assert next(x for x in n0["status"]["conditions"] if x["type"] == "Ready")["status"] == "True"
    lease = await c.client.get(R.LEASES, "sim-node-0", "kube-node-lease")
    first = lease["spec"]["renewTime"]

    async def renewed() -> bool:
        lz = await c.client.get(R.LEASES, "sim-node-0", "kube-node-lease")
        return lz["spec"]["renewTime"] != first

    await c.wait_for(renewed, timeout=10, what="lease renewal")
    # a bound pod becomes Running/Ready with an IP; usage shows up in metrics.k8s.io
    p = pod("m", cpu="100m")
    p["metadata"]["annotations"] = {"sim.tugboat.io/cpu": "250m", "sim.tugboat.io/memory": "64Mi"}
    await c.client.create(R.PODS, p)

    async def running() -> dict | None:
        x = await c.client.get(R.PODS, "m", "default")
        return x if x["status"].get("phase") == "Running" and pod_ready(x) else None

    x = await c.wait_for(running, what="pod running")
    assert x["status"]["podIP"].startswith("10.244.") and x["status"]["containerStatuses"][0]["ready"]
    assert x["status"]["qosClass"] == "Burstable"

    async def metrics() -> dict | None:
        pm = await c.client.request("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/m")
        return pm if pm and pm.get("containers") else None

    pm = await c.wait_for(metrics, what="pod metrics")
    assert pm["containers"][0]["usage"]["cpu"] == "250000000n"
    assert pm["containers"][0]["usage"]["memory"] == "65536Ki"
    # a pod that completes
    j = pod("done")
    j["spec"]["restartPolicy"] = "Never"
    j["metadata"]["annotations"] = {"sim.tugboat.io/complete-after": "200ms"}
    await c.client.create(R.PODS, j)

    async def succeeded() -> dict | None:
        x = await c.client.get(R.PODS, "done", "default")
        return x if x["status"].get("phase") == "Succeeded" else None

    x = await c.wait_for(succeeded, what="pod succeeded")
    assert x["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # graceful deletion is completed by the node
    await c.client.delete(R.PODS, "m", "default")

    async def gone() -> bool:
        return "m" not in {q["metadata"]["name"] for q in (await c.client.list(R.PODS, "default"))["items"]}

    await c.wait_for(gone, what="pod deleted")


async def test_cli_components_via_launcher(cluster: Cluster, tmp_path) -> None:
    """simulate-nodes, scheduler and controller-manager as processes (what `tug cluster up` starts)."""
    c = cluster
    procs = spawn_control_plane(c.kubeconfig, str(tmp_path / "logs"), simulated_nodes=2)
    try:
        async def nodes() -> bool:
            return len((await c.client.list(R.NODES))["items"]) == 2

        await c.wait_for(nodes, timeout=30, what="2 simulated nodes")
        await c.client.create(R.DEPLOYMENTS, deployment("cli", 3))

        async def ready() -> bool:
            d = await c.client.get(R.DEPLOYMENTS, "cli", "default")
            return (d.get("status") or {}).get("availableReplicas") == 3

        await c.wait_for(ready, timeout=30, what="deployment through the CLI components")
        pods = (await c.client.list(R.PODS, "default", label_selector="app=cli"))["items"]
        assert all(p["spec"]["nodeName"].startswith("sim-node-") and p["status"]["phase"] == "Running" for p in pods)
        for lease in ("kube-scheduler", "kube-controller-manager"):
            assert (await c.client.get(R.LEASES, lease, "kube-system"))["spec"]["holderIdentity"]
    finally:
        stop_processes(procs)
    logs = "".join((tmp_path / "logs" / f).read_text() for f in os.listdir(tmp_path / "logs"))
    assert all(p.returncode == 0 for p in procs), logs[-3000:]
