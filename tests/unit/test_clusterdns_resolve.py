"""Cluster DNS answers from the Services/EndpointSlices model, over real UDP/TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from tugboat.cluster.proxy.dns import ClusterDNS, pod_resolv_conf
from tugboat.cluster.proxy.model import ServiceModel


def svc(name: str, ns: str = "default", ip: str | None = "10.96.0.20", ports=None, **spec) -> dict:
    s = {"clusterIP": ip or "None", "clusterIPs": [ip or "None"],
         "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    s.update(spec)
    return {"metadata": {"name": name, "namespace": ns}, "spec": s}


def eps(svc_name: str, endpoints: list[dict], ns: str = "default", name: str | None = None, ports=None) -> dict:
    return {"metadata": {"name": name or f"{svc_name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]}


@pytest.fixture
def model() -> ServiceModel:
    m = ServiceModel()
    m.apply_service(svc("web"))
    m.apply_service(svc("db", ip=None, ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    m.apply_slice(eps("db", [
        {"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "hostname": "db-0"},
        {"addresses": ["10.244.2.7"], "conditions": {"ready": True}},
        {"addresses": ["10.244.2.9"], "conditions": {"ready": False}, "hostname": "db-2"},
    ], ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    m.apply_service(svc("ext", type="ExternalName", externalName="example.org", clusterIP=None, clusterIPs=None))
    return m


def ask(dns: ClusterDNS, name: str, qtype: str = "A") -> DNSRecord:
    r = dns.answer(DNSRecord.question(name, qtype))
    assert r is not None
    return r


def answers(r: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr)


def test_clusterip_service_a(model: ServiceModel) -> None:
    dns = ClusterDNS(model, upstreams=[])
    r = ask(dns, "web.default.svc.cluster.local")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert answers(r) == ["10.96.0.20"]
    # case-insensitive, trailing dot
    assert answers(ask(dns, "WEB.Default.SVC.cluster.local.")) == ["10.96.0.20"]
    # AAAA of an existing name: NODATA (no answer, not NXDOMAIN)
    r6 = ask(dns, "web.default.svc.cluster.local", "AAAA")
    assert r6.header.rcode == RCODE.NOERROR and not r6.rr and r6.auth


def test_headless_service_returns_ready_pod_ips(model: ServiceModel) -> None:
    dns = ClusterDNS(model, upstreams=[])
    assert answers(ask(dns, "db.default.svc.cluster.local")) == ["10.244.1.5", "10.244.2.7"]
    assert answers(ask(dns, "db-0.db.default.svc.cluster.local")) == ["10.244.1.5"]
    assert answers(ask(dns, "10-244-2-7.db.default.svc.cluster.local")) == ["10.244.2.7"]
    # not-ready endpoints are not published
    assert ask(dns, "db-2.db.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    # readiness change flows through the model
    model.apply_slice(eps("db", [{"addresses": ["10.244.2.9"], "conditions": {"ready": True}, "hostname": "db-2"}],
                          ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    assert answers(ask(dns, "db.default.svc.cluster.local")) == ["10.244.2.9"]


def test_srv_records(model: ServiceModel) -> None:
    dns = ClusterDNS(model, upstreams=[])
    r = ask(dns, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert len(r.rr) == 1
    srv = r.rr[0].rdata
    assert srv.port == 80 and str(srv.target) == "web.default.svc.cluster.local."
    assert [str(a.rdata) for a in r.ar] == ["10.96.0.20"]
    r = ask(dns, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    targets = sorted((str(rr.rdata.target), rr.rdata.port) for rr in r.rr)
    assert targets == [("10-244-2-7.db.default.svc.cluster.local.", 5432), ("db-0.db.default.svc.cluster.local.", 5432)]
    assert ask(dns, "_nope._tcp.web.default.svc.cluster.local", "SRV").header.rcode == RCODE.NXDOMAIN


def test_pod_records_search_path_and_nxdomain(model: ServiceModel) -> None:
    dns = ClusterDNS(model, upstreams=[])
    assert answers(ask(dns, "10-244-3-4.default.pod.cluster.local")) == ["10.244.3.4"]
    # a search-path expansion of an outside name is answered locally with NXDOMAIN + SOA
    for name in ("example.com.default.svc.cluster.local", "example.com.svc.cluster.local",
                 "example.com.cluster.local", "missing.default.svc.cluster.local"):
        r = ask(dns, name)
        assert r.header.rcode == RCODE.NXDOMAIN, name
        assert r.auth and QTYPE[r.auth[0].rtype] == "SOA"
    assert ask(dns, "default.svc.cluster.local").header.rcode == RCODE.NOERROR
    assert ask(dns, "nons.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    conf = pod_resolv_conf("team", "10.244.0.1")
    assert "search team.svc.cluster.local svc.cluster.local cluster.local" in conf
    assert "nameserver 10.244.0.1" in conf and "ndots:5" in conf


def test_external_name_and_ptr(model: ServiceModel) -> None:
    dns = ClusterDNS(model, upstreams=[])
    r = ask(dns, "ext.default.svc.cluster.local")
    assert QTYPE[r.rr[0].rtype] == "CNAME" and str(r.rr[0].rdata) == "example.org."
    r = ask(dns, "20.0.96.10.in-addr.arpa", "PTR")
    assert answers(r) == ["web.default.svc.cluster.local."]
    r = ask(dns, "5.1.244.10.in-addr.arpa", "PTR")
    assert answers(r) == ["db-0.db.default.svc.cluster.local."]
    assert dns.answer(DNSRecord.question("1.1.168.192.in-addr.arpa", "PTR")) is None  # forwarded
    assert dns.answer(DNSRecord.question("example.org")) is None  # forwarded
    model.delete_service({"metadata": {"name": "web", "namespace": "default"}})
    assert ask(dns, "web.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN


async def _upstream() -> tuple[asyncio.DatagramTransport, int, list[str]]:
    """A tiny upstream resolver on 127.0.0.1 that knows example.org."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    class P(asyncio.DatagramProtocol):
        def connection_made(self, t):  # type: ignore[no-untyped-def]
            self.t = t

        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            req = DNSRecord.parse(data)
            seen.append(str(req.q.qname))
            rep = req.reply()
            rep.add_answer(RR(str(req.q.qname), QTYPE.A, rdata=A("127.0.0.99"), ttl=60))
            self.t.sendto(rep.pack(), addr)

    t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    return t, t.get_extra_info("sockname")[1], seen  # type: ignore[return-value]


async def _udp(port: int, name: str, qtype: str = "A") -> DNSRecord:
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        await loop.sock_sendto(s, DNSRecord.question(name, qtype).pack(), ("127.0.0.1", port))
        data = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
        return DNSRecord.parse(data)
    finally:
        s.close()


async def test_servers_udp_tcp_and_forwarding(model: ServiceModel) -> None:
    up, up_port, seen = await _upstream()
    dns = ClusterDNS(model, upstreams=[("127.0.0.1", up_port)])
    _, port = await dns.start("127.0.0.1", 0)
    try:
        r = await _udp(port, "web.default.svc.cluster.local")
        assert answers(r) == ["10.96.0.20"]
        r = await _udp(port, "example.org")
        assert answers(r) == ["127.0.0.99"] and seen == ["example.org."]
        # cluster names never reach the upstream
        await _udp(port, "nothing.default.svc.cluster.local")
        assert seen == ["example.org."]
        # TCP, two queries on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for name, want in (("db.default.svc.cluster.local", ["10.244.1.5", "10.244.2.7"]),
                           ("web.default.svc.cluster.local", ["10.96.0.20"])):
            q = DNSRecord.question(name).pack()
            writer.write(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            assert answers(DNSRecord.parse(await reader.readexactly(n))) == want
        writer.close()
    finally:
        await dns.stop()
        up.close()


async def test_unreachable_upstream_gives_servfail(model: ServiceModel) -> None:
    # a bound but silent UDP socket on loopback: the forward times out
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    dns = ClusterDNS(model, upstreams=[silent.getsockname()], forward_timeout=0.3)
    _, port = await dns.start("127.0.0.1", 0)
    try:
        r = await _udp(port, "example.org")
        assert r.header.rcode == RCODE.SERVFAIL
    finally:
        await dns.stop()
        silent.close()


def test_upstreams_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tugboat.cluster.proxy.dns import host_upstreams

    conf = tmp_path / "resolv.conf"
    conf.write_text("search example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    monkeypatch.delenv("TUG_DNS_UPSTREAMS", raising=False)
    assert host_upstreams(str(conf)) == [("192.0.2.53", 53), ("192.0.2.54", 53)]
    monkeypatch.setenv("TUG_DNS_UPSTREAMS", "127.0.0.1:5353, 192.0.2.1")
    assert host_upstreams(str(conf)) == [("127.0.0.1", 5353), ("192.0.2.1", 53)]
    assert ClusterDNS(ServiceModel()).upstreams == [("127.0.0.1", 5353), ("192.0.2.1", 53)]
