"""Cascading deletion (background, foreground, orphan) and namespace deletion."""

from __future__ import annotations

from controlplane_fixtures import Cluster, apiserver_fixture, cluster_fixture, deployment  # noqa: F401

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import NotFoundError

CTRL = ["deployment", "replicaset", "garbagecollector", "namespace"]


async def _count(c: Cluster, res: R.Resource, ns: str = "default", sel: str | None = None) -> int:
    return len((await c.client.list(res, ns, label_selector=sel))["items"])


async def _ready(c: Cluster, name: str, n: int, ns: str = "default") -> bool:
    d = await c.client.get(R.DEPLOYMENTS, name, ns)
    return (d.get("status") or {}).get("availableReplicas") == n


async def test_background_and_foreground_cascade_leave_no_orphans(cluster: Cluster) -> None:
    c = await cluster.start(controllers=CTRL)
    for name in ("bg", "fg"):
        await c.client.create(R.DEPLOYMENTS, deployment(name, 3))
    for name in ("bg", "fg"):
        await c.wait_for(lambda name=name: _ready(c, name, 3), what=f"{name} ready")
    await c.client.delete(R.DEPLOYMENTS, "bg", "default", propagation="Background")

    async def bg_gone() -> bool:
        return await _count(c, R.REPLICASETS, sel="app=bg") == 0 and await _count(c, R.PODS, sel="app=bg") == 0

    await c.wait_for(bg_gone, what="background cascade")
    # foreground: the owner stays (with deletionTimestamp) until its dependents are gone
    await c.client.delete(R.DEPLOYMENTS, "fg", "default", propagation="Foreground")
    d = await c.client.get(R.DEPLOYMENTS, "fg", "default")
    assert d["metadata"].get("deletionTimestamp") and "foregroundDeletion" in d["metadata"]["finalizers"]

    async def fg_gone() -> bool:
        try:
            await c.client.get(R.DEPLOYMENTS, "fg", "default")
            return False
        except NotFoundError:
            return await _count(c, R.REPLICASETS, sel="app=fg") == 0 and await _count(c, R.PODS, sel="app=fg") == 0

    await c.wait_for(fg_gone, timeout=30, what="foreground cascade")


async def test_orphan_keeps_dependents_without_owner_refs(cluster: Cluster) -> None:
    c = await cluster.start(controllers=CTRL)
    await c.client.create(R.DEPLOYMENTS, deployment("orph", 2))
    await c.wait_for(lambda: _ready(c, "orph", 2), what="ready")
    await c.client.delete(R.DEPLOYMENTS, "orph", "default", propagation="Orphan")

    async def orphaned() -> bool:
        try:
            await c.client.get(R.DEPLOYMENTS, "orph", "default")
            return False
        except NotFoundError:
            pass
        rss = (await c.client.list(R.REPLICASETS, "default", label_selector="app=orph"))["items"]
        return len(rss) == 1 and not rss[0]["metadata"].get("ownerReferences")

    await c.wait_for(orphaned, what="orphaned ReplicaSet")
    assert await _count(c, R.PODS, sel="app=orph") == 2
    # deleting the orphaned ReplicaSet (background) takes its pods with it
    rs = (await c.client.list(R.REPLICASETS, "default", label_selector="app=orph"))["items"][0]
    await c.client.delete(R.REPLICASETS, rs["metadata"]["name"], "default")

    async def pods_gone() -> bool:
        return await _count(c, R.PODS, sel="app=orph") == 0

    await c.wait_for(pods_gone, what="pods of the deleted ReplicaSet")


async def test_namespace_deletion_removes_everything(cluster: Cluster) -> None:
    c = await cluster.start(controllers=CTRL)
    await c.client.create(R.NAMESPACES, {"metadata": {"name": "team"}})
    await c.client.create(R.DEPLOYMENTS, deployment("app", 2, ns="team"))
    await c.client.create(R.CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "team"}, "data": {"a": "b"}}, "team")
    await c.wait_for(lambda: _ready(c, "app", 2, "team"), what="ready in team")
    await c.client.delete(R.NAMESPACES, "team")
    ns = await c.client.get(R.NAMESPACES, "team")
    assert ns["status"]["phase"] == "Terminating"

    async def gone() -> bool:
        try:
            await c.client.get(R.NAMESPACES, "team")
            return False
        except NotFoundError:
            return True

    await c.wait_for(gone, timeout=30, what="namespace gone")
    assert await _count(c, R.PODS, "team") == 0
    assert await _count(c, R.REPLICASETS, "team") == 0
