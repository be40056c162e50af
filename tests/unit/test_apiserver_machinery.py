"""Patch algorithms, selectors, defaults/validation, protobuf decoding, HPA conversion (no server)."""

from __future__ import annotations

import base64

import pytest

from tugboat.cluster.apiserver import protobuf
from tugboat.cluster.apiserver.kinds import REGISTRY, hpa_v1_to_v2, hpa_v2_to_v1
from tugboat.cluster.apiserver.meta import ApiError, human_duration, parse_label_selector
from tugboat.cluster.apiserver.patch import json_patch, merge_patch, strategic_merge_patch


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"l": [1, 2]}, {"l": [3]}) == {"l": [3]}


def test_json_patch_ops() -> None:
    doc = {"a": {"b": [1, 2]}, "x": 1}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3}, {"op": "add", "path": "/a/b/0", "value": 0},
                           {"op": "remove", "path": "/x"}, {"op": "copy", "from": "/a/b", "path": "/c"},
                           {"op": "move", "from": "/c", "path": "/d"}, {"op": "replace", "path": "/a/b/1", "value": 9},
                           {"op": "test", "path": "/d/3", "value": 3}, {"op": "add", "path": "/e~1f", "value": True}])
    assert out == {"a": {"b": [0, 9, 2, 3]}, "d": [0, 1, 2, 3], "e/f": True}
    assert doc == {"a": {"b": [1, 2]}, "x": 1}  # the input is not modified
    with pytest.raises(ApiError) as ei:
        json_patch(doc, [{"op": "test", "path": "/x", "value": 2}])
    assert ei.value.code == 422
    with pytest.raises(ApiError):
        json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])


def test_strategic_merge_patch_lists_and_directives() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                                   {"name": "b", "image": "b:1"}],
                    "volumes": [{"name": "v1", "emptyDir": {}}], "tolerations": [{"key": "k"}]},
           "metadata": {"finalizers": ["f1"]}}
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "a", "image": "a:2",
                                                               "env": [{"name": "Y", "value": "2"}]}],
                                               "tolerations": [{"key": "z"}]},
                                      "metadata": {"finalizers": ["f2"]}}, "Pod")
    a = out["spec"]["containers"][0]
    assert a["image"] == "a:2" and a["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert out["spec"]["containers"][1] == {"name": "b", "image": "b:1"}
    assert out["spec"]["tolerations"] == [{"key": "z"}]  # no merge key: replaced
    assert out["metadata"]["finalizers"] == ["f1", "f2"]  # merged set of primitives
    out = strategic_merge_patch(pod, {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                                               "containers": [{"name": "b", "image": "b:2"}]}}, "Pod")
    assert [c["name"] for c in out["spec"]["containers"]] == ["b", "a"] and out["spec"]["containers"][0]["image"] == "b:2"
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "b", "$patch": "delete"}],
                                               "volumes": [{"$patch": "replace"}, {"name": "v2"}]}}, "Pod")
    assert [c["name"] for c in out["spec"]["containers"]] == ["a"] and out["spec"]["volumes"] == [{"name": "v2"}]
    out = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}, "Pod")
    assert out["metadata"]["finalizers"] == []
    out = strategic_merge_patch({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
                                {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, "Deployment")
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    svc = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
    out = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}, "Service")
    assert out["spec"]["ports"][1] == {"port": 443, "name": "https", "targetPort": 8443}


def test_label_selectors() -> None:
    sel = parse_label_selector("app=web,tier!=db,env in (prod, staging),!legacy,track")
    assert sel is not None
    assert sel({"app": "web", "env": "prod", "track": "x"})
    assert not sel({"app": "web", "env": "dev", "track": "x"})
    assert not sel({"app": "web", "env": "prod", "track": "x", "legacy": "1"})
    assert not sel({"app": "web", "env": "prod", "track": "x", "tier": "db"})
    notin = parse_label_selector("env notin (a,b)")
    assert notin is not None and notin({}) and not notin({"env": "a"})
    with pytest.raises(ApiError):
        parse_label_selector("a=b=c")


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 119, 125, 600, 3 * 3600 + 60, 9 * 3600, 3 * 86400)] == \
        ["5s", "119s", "2m5s", "10m", "3h1m", "9h", "3d"]


def test_defaults_and_validation() -> None:
    rt = REGISTRY.get("apps", "v1", "deployments")
    assert rt is not None and rt.defaults is not None and rt.validate is not None
    d = {"kind": "Deployment", "metadata": {"name": "x"}, "spec": {
        "selector": {"matchLabels": {"app": "x"}},
        "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    rt.defaults(d)
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    causes = rt.validate(d, None)
    assert [c[1] for c in causes] == ["spec.template.metadata.labels"]


def test_hpa_conversion_round_trip() -> None:
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "minReplicas": 1, "maxReplicas": 4,
                   "targetCPUUtilizationPercentage": 55}}
    v2 = hpa_v1_to_v2(v1)
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 55}}}]
    v2["spec"]["metrics"].append({"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue",
                                                                                                 "averageValue": "10"}}})
    back = hpa_v2_to_v1(v2)
    assert back["spec"]["targetCPUUtilizationPercentage"] == 55
    assert "autoscaling.alpha.kubernetes.io/metrics" in back["metadata"]["annotations"]
    assert hpa_v1_to_v2(back)["spec"]["metrics"] == v2["spec"]["metrics"]


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_protobuf_configmap_and_secret() -> None:
    meta = _field(1, b"cfg") + _field(11, _field(1, b"app") + _field(2, b"x")) + _field(2, b"")
    cm = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v"))
    body = b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(2, cm) + \
        _field(4, b"application/vnd.kubernetes.protobuf")
    obj = protobuf.decode(body)
    assert obj == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg", "labels": {"app": "x"}},
                   "data": {"k": "v"}}
    sec = _field(1, _field(1, b"s")) + _field(2, _field(1, b"pw") + _field(2, b"\x00\xff")) + _field(3, b"Opaque")
    body = b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"Secret")) + _field(2, sec)
    obj = protobuf.decode(body)
    assert obj["data"] == {"pw": base64.b64encode(b"\x00\xff").decode()} and obj["type"] == "Opaque"
    with pytest.raises(ApiError) as ei:
        protobuf.decode(b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"Frobnicator")))
    assert ei.value.code == 415
