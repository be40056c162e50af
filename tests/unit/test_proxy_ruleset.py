"""Service proxy ruleset generation from the Services/EndpointSlices model (no root)."""

from __future__ import annotations

import re

from tugboat.cluster.proxy.model import ServiceModel
from tugboat.cluster.proxy.nftables import render_ruleset


def svc(name: str, ip: str, ports: list[dict], **spec) -> dict:
    s = {"clusterIP": ip, "clusterIPs": [ip], "ports": ports}
    s.update(spec)
    return {"metadata": {"name": name, "namespace": "default"}, "spec": s}


def sl(svc_name: str, eps: list[tuple[str, bool]], ports: list[dict], name: str | None = None) -> dict:
    return {"metadata": {"name": name or svc_name + "-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": r}} for ip, r in eps]}


HTTP = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]
HTTP_EP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_clusterip_balances_over_ready_endpoints_only() -> None:
    m = ServiceModel()
    m.apply_service(svc("web", "10.96.0.20", HTTP))
    m.apply_slice(sl("web", [("10.244.0.5", True), ("10.244.0.6", True), ("10.244.0.7", False)], HTTP_EP))
    # a second slice of the same service adds an endpoint; duplicates collapse
    m.apply_slice(sl("web", [("10.244.1.9", True), ("10.244.0.5", True)], HTTP_EP, name="web-2"))
    out = render_ruleset(m)
    assert out.startswith("table ip tugboat-svc\ndelete table ip tugboat-svc\n")
    assert re.search(r"10\.96\.0\.20 \. tcp \. 80 : goto svc-\S+", out)
    assert "numgen random mod 3 vmap { 0 : goto ep-" in out
    dnats = sorted(re.findall(r"dnat to (\S+)", out))
    assert dnats == ["10.244.0.5:8080", "10.244.0.6:8080", "10.244.1.9:8080"]  # named targetPort resolved
    assert "no-endpoint-services {\n    type ipv4_addr . inet_proto . inet_service\n  }" in out


def test_no_endpoints_headless_externalname_nodeport_affinity() -> None:
    m = ServiceModel()
    m.apply_service(svc("empty", "10.96.0.21", [{"port": 53, "protocol": "UDP"}]))
    m.apply_service(svc("headless", "None", HTTP))
    m.apply_slice(sl("headless", [("10.244.0.8", True)], HTTP_EP))
    m.apply_service({"metadata": {"name": "ext", "namespace": "default"},
                     "spec": {"type": "ExternalName", "externalName": "example.org"}})
    m.apply_service(svc("np", "10.96.0.22", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                                              "nodePort": 30080}], type="NodePort", sessionAffinity="ClientIP",
                        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    m.apply_slice(sl("np", [("10.244.0.9", True)], HTTP_EP))
    out = render_ruleset(m, cluster_cidr="10.244.0.0/16")
    assert "elements = { 10.96.0.21 . udp . 53 }" in out  # rejected, not black-holed
    assert "10.244.0.8" not in out and "example.org" not in out
    assert re.search(r"elements = \{ tcp \. 30080 : goto np-\S+ \}", out)
    assert re.search(r"set aff-\S+ \{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout 60s", out)
    assert re.search(r"ip saddr @aff-(\S+) goto ep-\1", out)
    assert "update @aff-" in out and "ip saddr != 10.244.0.0/16 meta mark set" in out
    # with one endpoint no numgen is needed
    assert "numgen" not in out


def test_model_changes_bump_generation_and_notify() -> None:
    m = ServiceModel()
    calls: list[int] = []
    m.subscribe(lambda: calls.append(m.generation))
    m.apply_service(svc("web", "10.96.0.20", HTTP))
    m.apply_service(svc("web", "10.96.0.20", HTTP))  # no change: no notification
    m.apply_slice(sl("web", [("10.244.0.5", True)], HTTP_EP))
    m.delete_slice({"metadata": {"name": "web-1", "namespace": "default"}})
    m.delete_service({"metadata": {"name": "web", "namespace": "default"}})
    assert calls == [1, 2, 3, 4]
    assert "10.96.0.20" not in render_ruleset(m)
