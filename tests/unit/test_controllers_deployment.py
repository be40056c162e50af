"""Deployments and ReplicaSets against the real API server with simulated nodes."""

from __future__ import annotations

import asyncio

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import pod_ready


async def _pods(c: Cluster, app: str) -> list[dict]:
    return (await c.client.list(R.PODS, "default", label_selector=f"app={app}"))["items"]


async def _rolled_out(c: Cluster, name: str, replicas: int) -> bool:
    d = await c.client.get(R.DEPLOYMENTS, name, "default")
    s = d.get("status") or {}
    return (s.get("observedGeneration", 0) >= d["metadata"]["generation"] and s.get("updatedReplicas") == replicas
            and s.get("replicas") == replicas and s.get("availableReplicas") == replicas)


async def test_deployment_reaches_replicas_and_replaces_deleted_pods(cluster: Cluster) -> None:
    c = await cluster.start(controllers=["deployment", "replicaset"])
    await c.client.create(R.DEPLOYMENTS, deployment("web", 4))
    await c.wait_for(lambda: _rolled_out(c, "web", 4), what="4 available replicas")
    pods = await _pods(c, "web")
    assert len(pods) == 4
    assert all(p["spec"].get("nodeName", "").startswith("sim-node-") and pod_ready(p) for p in pods)
    assert all(p["status"].get("podIP") for p in pods)
    rs = (await c.client.list(R.REPLICASETS, "default"))["items"]
    assert len(rs) == 1 and rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    d = await c.client.get(R.DEPLOYMENTS, "web", "default")
    conds = {x["type"]: x for x in d["status"]["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    # a deleted pod is replaced
    victim = pods[0]["metadata"]["name"]
    await c.client.delete(R.PODS, victim, "default")

    async def replaced() -> bool:
        ps = [p for p in await _pods(c, "web") if not p["metadata"].get("deletionTimestamp")]
        return len(ps) == 4 and victim not in {p["metadata"]["name"] for p in ps} and all(pod_ready(p) for p in ps)

    await c.wait_for(replaced, what="replacement pod")
    # scale through the scale subresource (what kubectl scale does)
    await c.client.patch(R.DEPLOYMENTS, "web", {"spec": {"replicas": 2}}, "default", subresource="scale")
    await c.wait_for(lambda: _rolled_out(c, "web", 2), what="scaled to 2")

    async def two() -> bool:
        return len([p for p in await _pods(c, "web") if not p["metadata"].get("deletionTimestamp")]) == 2

    await c.wait_for(two, what="2 pods")


async def test_rolling_update_respects_max_unavailable_and_undo(cluster: Cluster) -> None:
    c = await cluster.start(controllers=["deployment", "replicaset"])
    n = 6
    dep = deployment("roll", n, "nginx:1.26", strategy={"type": "RollingUpdate",
                                                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})
    await c.client.create(R.DEPLOYMENTS, dep)
    await c.wait_for(lambda: _rolled_out(c, "roll", n), what="initial rollout")
    # watch every pod event while the update runs and track availability and pod count
    lst = await c.client.list(R.PODS, "default", label_selector="app=roll")
    state = {p["metadata"]["name"]: p for p in lst["items"]}
    observed = {"min_ready": n, "max_total": n}

    async def watch() -> None:
        async for ev in c.client.watch(R.PODS, "default", label_selector="app=roll",
                                       resource_version=lst["metadata"]["resourceVersion"], timeout_seconds=60):
            o = ev["object"]
            if ev["type"] == "DELETED":
                state.pop(o["metadata"]["name"], None)
            elif ev["type"] in ("ADDED", "MODIFIED"):
                state[o["metadata"]["name"]] = o
            live = [p for p in state.values() if not p["metadata"].get("deletionTimestamp")]
            observed["min_ready"] = min(observed["min_ready"], sum(1 for p in live if pod_ready(p)))
            observed["max_total"] = max(observed["max_total"], len(live))

    w = asyncio.ensure_future(watch())
    await asyncio.sleep(0.2)
    await c.client.patch(R.DEPLOYMENTS, "roll", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.27"}]}}}}, "default", content_type="application/strategic-merge-patch+json")
    await c.wait_for(lambda: _rolled_out(c, "roll", n), timeout=40, what="rolling update")
    await asyncio.sleep(0.3)
    w.cancel()
    assert observed["min_ready"] >= n - 1, observed
    assert observed["max_total"] <= n + 1, observed
    pods = [p for p in await _pods(c, "roll") if not p["metadata"].get("deletionTimestamp")]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.27"}
    d = await c.client.get(R.DEPLOYMENTS, "roll", "default")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    # rollout undo (what kubectl does: copy revision 1's template back): the old ReplicaSet is reused
    rss = (await c.client.list(R.REPLICASETS, "default", label_selector="app=roll"))["items"]
    old = next(r for r in rss if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
    tmpl = old["spec"]["template"]
    tmpl["metadata"]["labels"].pop("pod-template-hash")
    d["spec"]["template"] = tmpl
    await c.client.update(R.DEPLOYMENTS, d)
    await c.wait_for(lambda: _rolled_out(c, "roll", n), timeout=40, what="undo")
    rss = (await c.client.list(R.REPLICASETS, "default", label_selector="app=roll"))["items"]
    assert len(rss) == 2
    back = next(r for r in rss if r["metadata"]["uid"] == old["metadata"]["uid"])
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert back["spec"]["replicas"] == n
    pods = [p for p in await _pods(c, "roll") if not p["metadata"].get("deletionTimestamp")]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.26"}


async def test_recreate_pause_resume_and_progress_deadline(cluster: Cluster) -> None:
    c = await cluster.start(controllers=["deployment", "replicaset"])
    await c.client.create(R.DEPLOYMENTS, deployment("rc", 3, strategy={"type": "Recreate"}))
    await c.wait_for(lambda: _rolled_out(c, "rc", 3), what="recreate rollout")
    # pause: template changes do not roll out
    await c.client.patch(R.DEPLOYMENTS, "rc", {"spec": {"paused": True}}, "default")

    async def paused() -> bool:
        d = await c.client.get(R.DEPLOYMENTS, "rc", "default")
        return any(x["reason"] == "DeploymentPaused" for x in d["status"].get("conditions", []))

    await c.wait_for(paused, what="paused condition")
    await c.client.patch(R.DEPLOYMENTS, "rc", {"spec": {"template": {"metadata": {"labels": {"app": "rc", "v": "2"}}}}},
                         "default")
    await asyncio.sleep(1.0)
    assert len((await c.client.list(R.REPLICASETS, "default", label_selector="app=rc"))["items"]) == 1
    await c.client.patch(R.DEPLOYMENTS, "rc", {"spec": {"paused": False}}, "default")
    await c.wait_for(lambda: _rolled_out(c, "rc", 3), timeout=30, what="resumed rollout")
    pods = [p for p in await _pods(c, "rc") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 3 and all(p["metadata"]["labels"].get("v") == "2" for p in pods)
    # a rollout that cannot progress (pods never become ready) hits progressDeadlineSeconds
    dep = deployment("stuck", 2, progressDeadlineSeconds=2)
    dep["spec"]["template"]["metadata"]["annotations"] = {"sim.tugboat.io/not-ready": "true"}
    await c.client.create(R.DEPLOYMENTS, dep)

    async def deadline() -> bool:
        d = await c.client.get(R.DEPLOYMENTS, "stuck", "default")
        return any(x["type"] == "Progressing" and x["reason"] == "ProgressDeadlineExceeded" and x["status"] == "False"
                   for x in (d.get("status") or {}).get("conditions", []))

    await c.wait_for(deadline, timeout=20, what="ProgressDeadlineExceeded")


async def test_scaling_mid_rollout_is_proportional(cluster: Cluster) -> None:
    c = await cluster.start(controllers=["deployment", "replicaset"])
    dep = deployment("prop", 10, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3,
                                                                                       "maxUnavailable": 2}})
    await c.client.create(R.DEPLOYMENTS, dep)
    await c.wait_for(lambda: _rolled_out(c, "prop", 10), what="initial rollout")
    # the new template never becomes ready: the rollout stalls with two active ReplicaSets
    await c.client.patch(R.DEPLOYMENTS, "prop", {"spec": {"template": {"metadata": {"annotations": {
        "sim.tugboat.io/not-ready": "true"}}}}}, "default")

    async def stalled() -> list | None:
        rss = (await c.client.list(R.REPLICASETS, "default", label_selector="app=prop"))["items"]
        sizes = sorted(r["spec"]["replicas"] for r in rss)
        return rss if len(rss) == 2 and sizes == [5, 8] else None

    await asyncio.sleep(1.0)
    rss = await c.wait_for(stalled, what="stalled rollout (8 old + 5 new)")
    old_name = next(r["metadata"]["name"] for r in rss if r["spec"]["replicas"] == 8)
    await c.client.patch(R.DEPLOYMENTS, "prop", {"spec": {"replicas": 20}}, "default", subresource="scale")

    async def scaled() -> dict | None:
        rss = (await c.client.list(R.REPLICASETS, "default", label_selector="app=prop"))["items"]
        sizes = {r["metadata"]["name"]: r["spec"]["replicas"] for r in rss}
        return sizes if sum(sizes.values()) == 23 else None

    sizes = await c.wait_for(scaled, what="proportional scale to 20 (+3 surge)")
    # 13 -> 23: the 8-replica set gets 8*23/13 ≈ 14, the 5-replica set the rest (9)
    assert sizes[old_name] == 14 and sum(v for k, v in sizes.items() if k != old_name) == 9, sizes


async def test_replicaset_adopts_matching_orphans(cluster: Cluster) -> None:
    c = await cluster.start(controllers=["replicaset"])
    await c.client.create(R.PODS, {"metadata": {"name": "stray", "labels": {"app": "adopt"}},
                                   "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    rs = {"metadata": {"name": "adopt"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "adopt"}},
                                                  "template": {"metadata": {"labels": {"app": "adopt"}},
                                                               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    await c.client.create(R.REPLICASETS, rs)

    async def adopted() -> list | None:
        pods = (await c.client.list(R.PODS, "default", label_selector="app=adopt"))["items"]
        owned = [p for p in pods if any(r.get("kind") == "ReplicaSet" and r.get("controller")
                                        for r in p["metadata"].get("ownerReferences") or [])]
        return pods if len(pods) == 2 and len(owned) == 2 else None

    pods = await c.wait_for(adopted, what="stray pod adopted, one more created")
    assert "stray" in {p["metadata"]["name"] for p in pods}
