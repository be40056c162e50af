"""The disruption controller keeps PodDisruptionBudget status, and the API server's eviction
subresource honours it (real API server process, simulated nodes, scheduler, controllers)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment, pod  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, NotFoundError
from tugboat.cluster.client.util import pod_ready
from tugboat.cluster.controllers.disruption import scaled

PDB = R.PODDISRUPTIONBUDGETS


def test_scaled_int_or_percent() -> None:
    assert scaled(2, 10) == 2 and scaled("50%", 3) == 2 and scaled("34%", 3) == 2 and scaled("0%", 5) == 0
    assert scaled("50%", 3, round_up=False) == 1
    with pytest.raises(ValueError):
        scaled("x%", 3)


async def test_pdb_status_and_eviction(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=["deployment", "replicaset", "disruption"])
    await c.client.create(R.DEPLOYMENTS, deployment("web", replicas=3))
    await c.client.create(PDB, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                "metadata": {"name": "web-pdb"},
                                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}, "default")
    await c.client.create(PDB, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                "metadata": {"name": "web-max"},
                                "spec": {"maxUnavailable": "34%", "selector": {"matchLabels": {"app": "other"}}}},
                          "default")

    async def status(name: str, **want: int) -> dict | None:
        st = (await c.client.get(PDB, name, "default")).get("status") or {}
        return st if all(st.get(k) == v for k, v in want.items()) else None

    st = await c.wait_for(lambda: status("web-pdb", currentHealthy=3, desiredHealthy=2, expectedPods=3,
                                         disruptionsAllowed=1), timeout=30, what="pdb status")
    assert st["observedGeneration"] == 1
    cond = next(x for x in st["conditions"] if x["type"] == "DisruptionAllowed")
    assert cond["status"] == "True" and cond["reason"] == "SufficientPods"
    # an empty selection: nothing expected, nothing allowed
    await c.wait_for(lambda: status("web-max", expectedPods=0, currentHealthy=0, disruptionsAllowed=0,
                                    observedGeneration=1), what="empty pdb status")

    pods = [p for p in (await c.client.list(R.PODS, "default", label_selector="app=web"))["items"] if pod_ready(p)]
    assert len(pods) == 3
    await c.client.evict("default", pods[0]["metadata"]["name"])
    with pytest.raises(ApiError) as exc:
        await c.client.evict("default", pods[1]["metadata"]["name"])
    assert exc.value.code == 429
    assert exc.value.body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    try:  # the simulated node finishes the evicted pod quickly
        gone = await c.client.get(R.PODS, pods[0]["metadata"]["name"], "default")
        assert gone["metadata"].get("deletionTimestamp")
    except NotFoundError:
        pass
    still = await c.client.get(R.PODS, pods[1]["metadata"]["name"], "default")
    assert not still["metadata"].get("deletionTimestamp")

    # the replacement becomes ready: one disruption is allowed again, and the evicted pod has left disruptedPods
    st = await c.wait_for(lambda: status("web-pdb", currentHealthy=3, disruptionsAllowed=1), timeout=30,
                          what="budget recovers")
    assert not st.get("disruptedPods")
    await c.client.evict("default", pods[1]["metadata"]["name"])

    # maxUnavailable as a percentage of the Deployment's scale; scaling the Deployment follows
    await c.client.patch(PDB, "web-max", {"spec": {"selector": {"matchLabels": {"app": "web"}}}}, "default")
    await c.wait_for(lambda: status("web-max", expectedPods=3, desiredHealthy=1, observedGeneration=2),
                     timeout=30, what="maxUnavailable percent")
    await c.client.delete(PDB, "web-pdb", "default")  # one budget per pod for evictions
    await c.client.patch(R.DEPLOYMENTS, "web", {"spec": {"replicas": 5}}, "default")
    await c.wait_for(lambda: status("web-max", expectedPods=5, desiredHealthy=3, currentHealthy=5,
                                    disruptionsAllowed=2), timeout=30, what="scaled budget")


async def test_pdb_without_controller_fails_sync(cluster: Cluster) -> None:
    c = await cluster.start(nodes=1, controllers=["disruption"])
    await c.client.create(R.PODS, pod("lonely", labels={"app": "lonely"}), "default")
    await c.client.create(PDB, {"metadata": {"name": "pct"},
                                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "lonely"}}}},
                          "default")

    async def failed() -> dict | None:
        st = (await c.client.get(PDB, "pct", "default")).get("status") or {}
        conds = {x["type"]: x for x in st.get("conditions") or []}
        return st if conds.get("DisruptionAllowed", {}).get("reason") == "SyncFailed" else None

    st = await c.wait_for(failed, timeout=20, what="SyncFailed")
    assert st["disruptionsAllowed"] == 0
    # minAvailable as an integer needs no controller: the bare pod counts
    await c.client.patch(PDB, "pct", {"spec": {"maxUnavailable": None, "minAvailable": 0}}, "default")

    async def ok() -> dict | None:
        st = (await c.client.get(PDB, "pct", "default")).get("status") or {}
        return st if st.get("expectedPods") == 1 and st.get("disruptionsAllowed") == 1 else None

    await c.wait_for(ok, timeout=20, what="bare pod budget")


def _kubectl(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": c.kubeconfig}
    return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)


async def test_statefulset_and_daemonset_revisions_rollout_history_undo(cluster: Cluster) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    c = await cluster.start(nodes=2, controllers=["statefulset", "daemonset"])
    tmpl = {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:15"}]}}
    await c.client.create(R.STATEFULSETS, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                                           "spec": {"replicas": 1, "serviceName": "db",
                                                    "selector": {"matchLabels": {"app": "db"}}, "template": tmpl}})

    async def revisions(app: str, n: int) -> list[dict] | None:
        items = (await c.client.list(R.CONTROLLERREVISIONS, "default", label_selector=f"app={app}"))["items"]
        return sorted(items, key=lambda r: r["revision"]) if len(items) == n else None

    revs = await c.wait_for(lambda: revisions("db", 1), what="first revision")
    assert revs[0]["revision"] == 1 and revs[0]["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    assert revs[0]["data"]["spec"]["template"]["$patch"] == "replace"
    out = _kubectl(c, "set", "image", "statefulset/db", "db=postgres:16")
    assert out.returncode == 0, out.stderr
    revs = await c.wait_for(lambda: revisions("db", 2), what="second revision")
    assert [r["revision"] for r in revs] == [1, 2]
    out = _kubectl(c, "rollout", "history", "statefulset/db")
    assert out.returncode == 0, out.stderr
    assert [ln.split()[0] for ln in out.stdout.splitlines()[2:] if ln.strip()] == ["1", "2"]
    out = _kubectl(c, "rollout", "history", "statefulset/db", "--revision=1")
    assert out.returncode == 0 and "postgres:15" in out.stdout, out.stdout + out.stderr
    out = _kubectl(c, "rollout", "undo", "statefulset/db")
    assert out.returncode == 0 and "rolled back" in out.stdout, out.stderr
    sts = await c.client.get(R.STATEFULSETS, "db", "default")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:15"

    async def renumbered() -> list[dict] | None:
        revs = await revisions("db", 2)
        return revs if revs and [r["revision"] for r in revs] == [2, 3] else None

    revs = await c.wait_for(renumbered, what="old revision renumbered")
    assert revs[1]["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:15"

    # DaemonSets too
    dtmpl = {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}
    await c.client.create(R.DAEMONSETS, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                                         "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": dtmpl}})
    await c.wait_for(lambda: revisions("agent", 1), what="daemonset revision")
    assert _kubectl(c, "set", "image", "daemonset/agent", "a=agent:2").returncode == 0
    await c.wait_for(lambda: revisions("agent", 2), what="daemonset second revision")
    out = _kubectl(c, "rollout", "undo", "daemonset/agent", "--to-revision=1")
    assert out.returncode == 0 and "rolled back" in out.stdout, out.stderr
    ds = await c.client.get(R.DAEMONSETS, "agent", "default")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:1"


async def test_preemption_prefers_victims_without_budget_violation(cluster: Cluster) -> None:
    c = await cluster.start(nodes=2, controllers=["disruption"], node_kw={"cpu": "2", "memory": "4Gi"})
    await c.client.create(PDB, {"metadata": {"name": "keep"},
                                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}},
                          "default")
    for i in range(2):
        await c.client.create(R.PODS, pod(f"guarded-{i}", labels={"app": "guarded"}, cpu="900m",
                                          nodeName="sim-node-0"), "default")
        await c.client.create(R.PODS, pod(f"free-{i}", labels={"app": "free"}, cpu="900m",
                                          nodeName="sim-node-1"), "default")

    async def guarded() -> dict | None:
        st = (await c.client.get(PDB, "keep", "default")).get("status") or {}
        return st if st.get("currentHealthy") == 2 and st.get("disruptionsAllowed") == 0 else None

    await c.wait_for(guarded, timeout=20, what="budget exhausted")
    await c.client.create(R.PODS, pod("vip", cpu="1500m", priority=1000), "default")

    async def vip_node() -> str | None:
        return (await c.client.get(R.PODS, "vip", "default"))["spec"].get("nodeName")

    assert await c.wait_for(vip_node, timeout=30, what="preemptor bound") == "sim-node-1"
    left = {p["metadata"]["name"] for p in (await c.client.list(R.PODS, "default"))["items"]
            if not p["metadata"].get("deletionTimestamp")}
    assert {"guarded-0", "guarded-1"} <= left
