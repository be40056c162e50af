"""IPAM, port-binding parsing, nft rendering and resolv/hosts files: pure logic, no root."""

from __future__ import annotations

import socket

import pytest

from tugboat.errors import Conflict, InvalidArgument, Unavailable
from tugboat.network import files, ipam, nft, ports


def test_subnet_validation_messages() -> None:
    assert str(ipam.parse_subnet("172.20.0.0/16")) == "172.20.0.0/16"
    with pytest.raises(InvalidArgument, match="CIDR"):
        ipam.parse_subnet("172.20.0.0")
    with pytest.raises(InvalidArgument, match="not a valid CIDR"):
        ipam.parse_subnet("172.300.0.0/16")
    with pytest.raises(InvalidArgument, match=r"it should be 172\.20\.0\.0/16"):
        ipam.parse_subnet("172.20.0.1/16")
    with pytest.raises(InvalidArgument, match="IPv4"):
        ipam.parse_subnet("fd00::/64")
    with pytest.raises(InvalidArgument, match="too small"):
        ipam.parse_subnet("10.0.0.0/31")


def test_plan_network_gateway_and_range() -> None:
    assert ipam.plan_network("10.1.0.0/24", None, None) == ("10.1.0.0/24", "10.1.0.1", "")
    assert ipam.plan_network("10.1.0.0/24", "10.1.0.254", "10.1.0.128/25") == (
        "10.1.0.0/24", "10.1.0.254", "10.1.0.128/25")
    with pytest.raises(InvalidArgument, match="not in subnet"):
        ipam.plan_network("10.1.0.0/24", "10.2.0.1", None)
    with pytest.raises(InvalidArgument, match="not inside subnet"):
        ipam.plan_network("10.1.0.0/24", None, "10.1.1.0/25")


def test_overlap_detection_and_pool_choice() -> None:
    with pytest.raises(Conflict, match="overlaps"):
        ipam.check_overlap("10.0.0.0/8", [("10.5.0.0/16", "other")])
    ipam.check_overlap("10.0.0.0/16", [("10.1.0.0/16", "other")])
    taken = ["172.17.0.0/16", "172.18.5.0/24", "0.0.0.0/0"[:0]]
    assert ipam.pick_subnet(taken) == "172.19.0.0/16"
    with pytest.raises(Unavailable):
        ipam.pick_subnet(["0.0.0.0/1", "128.0.0.0/1"])


def test_pool_allocates_sequentially_skips_reserved_and_reuses() -> None:
    pool = ipam.Pool("10.9.0.0/29", "10.9.0.1")
    got = [pool.allocate() for _ in range(5)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(Unavailable):
        pool.allocate()
    pool.release("10.9.0.4")
    assert pool.allocate() == "10.9.0.4"
    with pytest.raises(Conflict, match="already in use"):
        pool.allocate("10.9.0.3")
    with pytest.raises(Conflict, match="reserved"):
        pool.allocate("10.9.0.1")
    with pytest.raises(InvalidArgument):
        pool.allocate("10.8.0.3")
    ranged = ipam.Pool("10.9.0.0/24", "10.9.0.1", "10.9.0.128/25")
    assert ranged.allocate() == "10.9.0.128"
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"


def test_port_binding_requests() -> None:
    reqs = ports.requests_from(
        {"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": ""}],
         "53/udp": [{"HostPort": "5300-5310"}], "443": None},
        True, ["80/tcp", "9000/tcp"])
    got = [(r.proto, r.container_port, r.host_ip, r.host_port_lo, r.host_port_hi) for r in reqs]
    assert got == [("tcp", 80, "", 8080, 8080), ("tcp", 80, "127.0.0.1", 0, 0),
                   ("udp", 53, "", 5300, 5310), ("tcp", 443, "", 0, 0), ("tcp", 9000, "", 0, 0)]
    with pytest.raises(InvalidArgument):
        ports.requests_from({"80/tcp": [{"HostPort": "70000"}]}, False, [])
    with pytest.raises(InvalidArgument):
        ports.requests_from({"x/tcp": []}, False, [])
    with pytest.raises(InvalidArgument):
        ports.requests_from({"80/icmp": []}, False, [])


def test_hold_reports_port_already_allocated() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(Conflict, match="port is already allocated"):
            ports.hold("tcp", "127.0.0.1", port)
    held = ports.hold("udp", "127.0.0.1", 0)
    try:
        with pytest.raises(Conflict):
            ports.hold("udp", "127.0.0.1", held.getsockname()[1])
    finally:
        ports.release([held])


def test_nft_render_isolation_masquerade_and_ports() -> None:
    rs = nft.Ruleset(
        bridges=[nft.BridgeRules("tug0", "172.17.0.0/16"), nft.BridgeRules("br-a", "172.18.0.0/16"),
                 nft.BridgeRules("br-i", "172.19.0.0/16", internal=True)],
        ports=[nft.PortRule("tcp", "", 8080, "172.17.0.2", 80),
               nft.PortRule("udp", "127.0.0.1", 5353, "172.18.0.2", 53)])
    text = nft.render(rs, "x1")
    assert text.startswith("table inet tugboat-x1 {}\ndelete table inet tugboat-x1\n")
    assert 'iifname "tug0" oifname { "br-a", "br-i" } drop' in text
    assert 'iifname "br-i" oifname != "br-i" drop' in text
    assert 'oifname "br-a" iifname != "br-a" ct state new ct status & dnat == 0 drop' in text
    assert 'ip saddr 172.17.0.0/16 oifname != "tug0" masquerade' in text
    assert 'ip saddr 172.19.0.0/16 oifname != "br-i" masquerade' not in text  # internal: no egress
    assert "tcp dport 8080 dnat to 172.17.0.2:80" in text
    assert "ip daddr 127.0.0.1 udp dport 5353 dnat to 172.18.0.2:53" in text
    assert 'oifname "tug0" ip saddr 127.0.0.0/8 masquerade' in text
    assert nft.table_names("") == ("tugboat", "tugboat-nat")
    quiet = nft.render(nft.Ruleset(bridges=[nft.BridgeRules("br-q", "10.5.0.0/24", icc=False, masquerade=False)]))
    assert 'iifname "br-q" oifname "br-q" drop' in quiet and "10.5.0.0/24 oifname" not in quiet
    assert "delete table ip tugboat-nat" in nft.render_delete()


def test_resolv_conf_and_hosts() -> None:
    host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
    emb = files.resolv_conf(host, embedded=True, dns=[], search=[], options=[])
    assert "nameserver 127.0.0.11\n" in emb and "options ndots:0 edns0" in emb
    assert "search corp.example" in emb and "host(10.0.0.2)" in emb
    plain = files.resolv_conf(host, embedded=False, dns=[], search=[], options=[])
    assert "127.0.0.53" not in plain and "nameserver 10.0.0.2" in plain
    only_local = files.resolv_conf("nameserver 127.0.0.53\n", embedded=False, dns=[], search=[], options=[])
    assert "nameserver 8.8.8.8" in only_local
    custom = files.resolv_conf(host, embedded=False, dns=["1.1.1.1"], search=["a.b"], options=["ndots:2"])
    assert "nameserver 1.1.1.1" in custom and "search a.b" in custom and "options ndots:2" in custom
    extra = [files.parse_extra_host("db:10.0.0.5", None), files.parse_extra_host("gw=host-gateway", "172.17.0.1")]
    hosts = files.hosts_file("abc", "example.org", ["172.17.0.2"], extra)
    assert hosts.startswith("127.0.0.1\tlocalhost\n")
    assert "10.0.0.5\tdb\n" in hosts and "172.17.0.1\tgw\n" in hosts
    assert hosts.endswith("172.17.0.2\tabc.example.org abc\n")
    with pytest.raises(InvalidArgument):
        files.parse_extra_host("nocolon", None)
