"""The service proxy's nftables table in a test-made node netns: pods (busybox httpd) behind a ClusterIP."""

from __future__ import annotations

import asyncio
import time

import pytest
from nodes_fixtures import Lab, lab, sh

from conftest import require_binary
from tugboat.cluster.proxy.model import ServiceModel
from tugboat.cluster.proxy.nftables import ServiceProxy

VIP = "10.96.77.10"


def service(**spec) -> dict:
    s = {"clusterIP": VIP, "clusterIPs": [VIP], "type": "ClusterIP",
         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    s.update(spec)
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": s}


def slice_(ips: list[str], ready: dict[str, bool] | None = None) -> dict:
    ready = ready or {}
    return {"metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready.get(ip, True)}} for ip in ips],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


@pytest.fixture
def env(tmp_path):  # type: ignore[no-untyped-def]
    require_binary("nft")
    require_binary("busybox")
    with lab("10.250.7") as lb:
        for i in (11, 12, 13):
            ns, _ = lb.add_pod(i)
            lb.httpd(ns, 8080, f"pod{i}", str(tmp_path))
        client, _ = lb.add_pod(20)
        deadline = time.time() + 5
        while time.time() < deadline and lb.get(client, "http://10.250.7.13:8080/", 1) is None:
            time.sleep(0.1)
        yield lb, client


def hits(lb: Lab, ns: str | None, url: str, n: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for _ in range(n):
        body = lb.get(ns, url, 2)
        out[str(body)] = out.get(str(body), 0) + 1
    return out


def test_clusterip_balances_affinity_nodeport_and_noendpoints(env) -> None:  # type: ignore[no-untyped-def]
    lb, client = env
    model = ServiceModel()
    model.apply_service(service())
    model.apply_slice(slice_(["10.250.7.11", "10.250.7.12", "10.250.7.13"]))
    proxy = ServiceProxy(model, netns=lb.node, cluster_cidr="10.250.7.0/24")
    try:
        proxy.sync_once()
        seen = hits(lb, client, f"http://{VIP}/", 24)
        assert set(seen) == {"pod11", "pod12", "pod13"}, seen
        # from the node itself (nat output hook)
        seen = hits(lb, lb.node, f"http://{VIP}/", 12)
        assert set(seen) <= {"pod11", "pod12", "pod13"} and len(seen) >= 2, seen
        # a pod reaching itself through its service (hairpin, masqueraded)
        model.apply_slice(slice_(["10.250.7.11"]))
        proxy.sync_once()
        assert lb.get("tp-" + lb.tag + "-11", f"http://{VIP}/") == "pod11"
        # not-ready endpoints get no traffic
        model.apply_slice(slice_(["10.250.7.11", "10.250.7.12"], ready={"10.250.7.11": False}))
        proxy.sync_once()
        assert set(hits(lb, client, f"http://{VIP}/", 6)) == {"pod12"}
        # sessionAffinity ClientIP pins a client to one endpoint
        model.apply_service(service(sessionAffinity="ClientIP"))
        model.apply_slice(slice_(["10.250.7.11", "10.250.7.12", "10.250.7.13"]))
        proxy.sync_once()
        seen = hits(lb, client, f"http://{VIP}/", 10)
        assert len(seen) == 1 and "None" not in seen, seen
        # NodePort on the node's address
        model.apply_service(service(type="NodePort", ports=[
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]))
        proxy.sync_once()
        seen = hits(lb, client, f"http://{lb.gw}:30080/", 12)
        assert set(seen) <= {"pod11", "pod12", "pod13"} and len(seen) >= 2, seen
        # no endpoints: refused at once (reject), not a time-out
        model.apply_slice(slice_([]))
        proxy.sync_once()
        t0 = time.monotonic()
        assert lb.get(client, f"http://{VIP}/", 3) is None
        assert time.monotonic() - t0 < 2
        # headless services get nothing
        model.apply_service(service(clusterIP="None", clusterIPs=["None"]))
        proxy.sync_once()
        out = sh("nft", "list", "map", "ip", "tugboat-svc", "service-ips", ns=lb.node).stdout
        assert VIP not in out
    finally:
        proxy.cleanup()
    assert sh("nft", "list", "table", "ip", "tugboat-svc", ns=lb.node, check=False).returncode != 0


async def test_endpoint_change_applied_within_one_second(env) -> None:  # type: ignore[no-untyped-def]
    lb, client = env
    model = ServiceModel()
    model.apply_service(service())
    model.apply_slice(slice_(["10.250.7.11"]))
    proxy = ServiceProxy(model, netns=lb.node)
    task = asyncio.create_task(proxy.run())
    loop = asyncio.get_running_loop()
    try:
        for _ in range(100):
            if proxy.synced_generation == model.generation:
                break
            await asyncio.sleep(0.02)
        assert await loop.run_in_executor(None, lb.get, client, f"http://{VIP}/") == "pod11"
        t0 = time.monotonic()
        model.apply_slice(slice_(["10.250.7.12"]))
        while proxy.synced_generation != model.generation:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, elapsed
        assert await loop.run_in_executor(None, lb.get, client, f"http://{VIP}/") == "pod12"
    finally:
        task.cancel()
        proxy.cleanup()
