"""Scheduler plugins as pure functions (no API server)."""

from __future__ import annotations

from tugboat.cluster.scheduler import plugins as P
from tugboat.cluster.scheduler.cache import Cache, pod_requests
from tugboat.cluster.scheduler.scheduler import fit_error_message


def node(name: str, cpu: str = "2", mem: str = "4Gi", labels: dict | None = None, taints: list | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}}


def pod(name: str, cpu: str = "500m", **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}], **spec}}


def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert P.tolerates([{"key": "k", "operator": "Equal", "value": "v"}], taint)
    assert P.tolerates([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert P.tolerates([{"operator": "Exists"}], taint)
    assert not P.tolerates([{"key": "k", "value": "w"}], taint)
    assert not P.tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_requests_include_init_containers_and_overhead() -> None:
    p = pod("a", "200m")
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
    p["spec"]["overhead"] = {"cpu": "50m"}
    r = pod_requests(p)
    assert (r.cpu, r.mem, r.pods) == (1050, 2**30, 1)


def test_filters_and_message() -> None:
    cache = Cache()
    for n in (node("a"), node("b", labels={"disk": "ssd"}), node("c", taints=[{"key": "x", "value": "y",
                                                                                 "effect": "NoSchedule"}])):
        cache.set_node(n)
    cache.add_pod(pod("filler", "1800m"), "a")
    st = P.prepare(pod("p", "1"), cache)
    reasons = {ni.name: P.filter_node(st, ni) for ni in cache.node_list}
    assert reasons["b"] is None
    assert reasons["a"] == ["Insufficient cpu"]
    assert reasons["c"] == ["node(s) had untolerated taint {x: y}"]
    big = P.prepare(pod("q", "3"), cache)
    rs = {ni.name: P.filter_node(big, ni) for ni in cache.node_list}
    assert fit_error_message(3, {k: v for k, v in rs.items() if v}) == (
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {x: y}.")
    sel = P.prepare(pod("s", nodeSelector={"disk": "ssd"}), cache)
    assert [ni.name for ni in cache.node_list if P.filter_node(sel, ni) is None] == ["b"]


def test_scores_prefer_emptier_nodes() -> None:
    cache = Cache()
    cache.set_node(node("busy"))
    cache.set_node(node("idle"))
    cache.add_pod(pod("x", "1500m"), "busy")
    st = P.prepare(pod("p"), cache)
    scores = dict(zip([n.name for n in cache.node_list], P.score_resources_all(st, cache.node_list), strict=True))
    assert scores["idle"] > scores["busy"]


def test_image_locality_prefers_nodes_with_the_image() -> None:
    cache = Cache()
    with_img = node("has")
    with_img["status"]["images"] = [{"names": ["docker.io/library/postgres:16"], "sizeBytes": 400 * 2**20}]
    cache.set_node(with_img)
    cache.set_node(node("empty"))
    p = pod("db")
    p["spec"]["containers"][0]["image"] = "postgres:16"
    st = P.prepare(p, cache)
    has, empty = cache.nodes["has"], cache.nodes["empty"]
    assert P.score_images(st, has, {"postgres:16": 0.5}) > 0
    assert P.score_images(st, empty, {"postgres:16": 0.5}) == 0
