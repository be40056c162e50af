"""The kubernetes Python client against our API server, on SQLite and on etcd."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import apiserver_fixtures
import pytest
from apiserver_fixtures import Cluster
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

cluster = apiserver_fixtures.cluster  # the fixture, parametrised over sqlite and etcd


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=cluster.api.kubeconfig)
    try:
        yield c
    finally:
        c.close()


def _deployment(name: str, replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}


def test_create_list_patch_delete(api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    for i in range(3):
        core.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod",
                                               "metadata": {"name": f"py-{i}", "labels": {"app": "py", "i": str(i)}},
                                               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    page = core.list_namespaced_pod("default", label_selector="app=py", limit=2)
    assert [p.metadata.name for p in page.items] == ["py-0", "py-1"] and page.metadata._continue
    rest = core.list_namespaced_pod("default", label_selector="app=py", limit=2, _continue=page.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["py-2"] and not rest.metadata._continue
    sel = core.list_namespaced_pod("default", label_selector="app=py,i in (0,2)")
    assert sorted(p.metadata.name for p in sel.items) == ["py-0", "py-2"]
    fs = core.list_pod_for_all_namespaces(field_selector="metadata.name=py-1")
    assert [p.metadata.name for p in fs.items] == ["py-1"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod("default", field_selector="spec.bogus=1")
    assert ei.value.status == 400

    d = apps.create_namespaced_deployment("default", _deployment("pyd"))
    assert d.metadata.uid and d.metadata.generation == 1 and d.spec.strategy.type == "RollingUpdate"
    s = apps.patch_namespaced_deployment_scale("pyd", "default", {"spec": {"replicas": 5}})
    assert s.spec.replicas == 5 and s.status.selector == "app=pyd"
    p = apps.patch_namespaced_deployment("pyd", "default", {"metadata": {"labels": {"extra": "yes"}}})
    assert p.metadata.labels == {"app": "pyd", "extra": "yes"} and p.spec.replicas == 5
    p = apps.patch_namespaced_deployment("pyd", "default", [{"op": "add", "path": "/metadata/annotations",
                                                             "value": {"a": "b"}}])
    assert p.metadata.annotations == {"a": "b"}
    # optimistic concurrency: a stale resourceVersion is a 409
    stale = apps.read_namespaced_deployment("pyd", "default")
    apps.patch_namespaced_deployment("pyd", "default", {"spec": {"replicas": 2}})
    stale.spec.replicas = 9
    with pytest.raises(ApiException) as ei:
        apps.replace_namespaced_deployment("pyd", "default", stale)
    assert ei.value.status == 409 and "the object has been modified" in ei.value.body
    # status is a subresource: a PUT of the main resource does not change it
    cur = apps.read_namespaced_deployment("pyd", "default")
    cur.status.replicas = 42
    apps.replace_namespaced_deployment("pyd", "default", cur)
    assert not apps.read_namespaced_deployment("pyd", "default").status.replicas
    cur = apps.read_namespaced_deployment("pyd", "default")
    cur.status.replicas = 2
    cur.status.observed_generation = cur.metadata.generation
    out = apps.replace_namespaced_deployment_status("pyd", "default", cur)
    assert out.status.replicas == 2
    # foreground deletion leaves the object with a finalizer (the garbage collector finishes it)
    apps.delete_namespaced_deployment("pyd", "default", propagation_policy="Foreground")
    d = apps.read_namespaced_deployment("pyd", "default")
    assert d.metadata.deletion_timestamp and d.metadata.finalizers == ["foregroundDeletion"]
    apps.patch_namespaced_deployment("pyd", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as ei:
        apps.read_namespaced_deployment("pyd", "default")
    assert ei.value.status == 404
    core.delete_collection_namespaced_pod("default", label_selector="app=py")
    assert core.list_namespaced_pod("default", label_selector="app=py").items == []


def test_watch_and_resume(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    lst = core.list_namespaced_config_map("default", label_selector="w=1")
    rv = lst.metadata.resource_version

    def writer() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map("default", {"metadata": {"name": "wa", "labels": {"w": "1"}},
                                                      "data": {"k": "1"}})
        core.patch_namespaced_config_map("wa", "default", {"data": {"k": "2"}})
        core.delete_namespaced_config_map("wa", "default")

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    seen = []
    last_rv = None
    for ev in w.stream(core.list_namespaced_config_map, "default", label_selector="w=1", resource_version=rv,
                       timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("k")))
        if ev["type"] == "ADDED":
            last_rv = ev["object"].metadata.resource_version
        if ev["type"] == "DELETED":
            w.stop()
    t.join()
    assert seen == [("ADDED", "wa", "1"), ("MODIFIED", "wa", "2"), ("DELETED", "wa", "2")]
    # resuming from the ADDED event's resourceVersion replays what came after it
    resumed = []
    w2 = watch.Watch()
    for ev in w2.stream(core.list_namespaced_config_map, "default", label_selector="w=1", resource_version=last_rv,
                        timeout_seconds=3):
        resumed.append(ev["type"])
        if ev["type"] == "DELETED":
            w2.stop()
    assert resumed == ["MODIFIED", "DELETED"]
    # a watch without resourceVersion starts with the current objects
    core.create_namespaced_config_map("default", {"metadata": {"name": "wb", "labels": {"w": "2"}}})
    first = next(iter(watch.Watch().stream(core.list_namespaced_config_map, "default", label_selector="w=2",
                                           timeout_seconds=2)))
    assert first["type"] == "ADDED" and first["object"].metadata.name == "wb"
    core.delete_namespaced_config_map("wb", "default")


def test_generate_name_hpa_conversion_lease(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert cm.metadata.name.startswith("gen-") and len(cm.metadata.name) == 9
    core.delete_namespaced_config_map(cm.metadata.name, "default")
    v1 = client.AutoscalingV1Api(api)
    v2 = client.AutoscalingV2Api(api)
    v1.create_namespaced_horizontal_pod_autoscaler("default", {
        "metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x", "apiVersion": "apps/v1"},
                                            "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}})
    h2 = v2.read_namespaced_horizontal_pod_autoscaler("h", "default")
    assert h2.spec.metrics[0].resource.name == "cpu" and h2.spec.metrics[0].resource.target.average_utilization == 50
    h2.spec.metrics[0].resource.target.average_utilization = 70
    v2.replace_namespaced_horizontal_pod_autoscaler("h", "default", h2)
    assert v1.read_namespaced_horizontal_pod_autoscaler("h", "default").spec.target_cpu_utilization_percentage == 70
    v1.delete_namespaced_horizontal_pod_autoscaler("h", "default")
    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease("kube-node-lease", {"metadata": {"name": "node-1"},
                                                              "spec": {"holderIdentity": "node-1",
                                                                       "leaseDurationSeconds": 40}})
    lease.spec.renew_time = "2026-01-01T00:00:00.000000Z"
    coord.replace_namespaced_lease("node-1", "kube-node-lease", lease)
    coord.delete_namespaced_lease("node-1", "kube-node-lease")


def test_node_pod_binding_and_status(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                      "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                                 "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                                 "conditions": [{"type": "Ready", "status": "True"}]}})
    n = core.read_node("n1")
    assert n.status.capacity["cpu"] == "4"  # node status is kept on create (node agents register that way)
    core.create_namespaced_pod("default", {"metadata": {"name": "bindme"},
                                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    core.create_namespaced_binding("default", {"metadata": {"name": "bindme"},
                                               "target": {"kind": "Node", "name": "n1"}},
                                   _preload_content=False)
    p = core.read_namespaced_pod("bindme", "default")
    assert p.spec.node_name == "n1"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions)
    assert [x.metadata.name for x in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items] == ["bindme"]
    p.status.phase = "Running"
    core.replace_namespaced_pod_status("bindme", "default", p)
    assert core.read_namespaced_pod("bindme", "default").status.phase == "Running"
    # a scheduled, running pod is deleted gracefully: the node agent confirms with gracePeriod 0
    core.delete_namespaced_pod("bindme", "default")
    p = core.read_namespaced_pod("bindme", "default")
    assert p.metadata.deletion_timestamp and p.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("bindme", "default", grace_period_seconds=0)
    with pytest.raises(ApiException):
        core.read_namespaced_pod("bindme", "default")
    core.delete_node("n1")
