"""Bridge networks on the real kernel: names, isolation, published ports, egress, restore."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from network_fixtures import Lab, http_get, lab_fixture, nft_tables, our_links  # noqa: F401

from tugboat.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from tugboat.network import kernel
from tugboat.network.models import ContainerNetworkSpec as Spec


def test_names_resolve_on_user_network_and_other_network_is_isolated(lab: Lab) -> None:
    lab.mgr.create("front")
    web = lab.run(Spec(mode="front", name="web", aliases={"front": ["www"]}))
    web.httpd(80, "hello from web")
    client = lab.run(Spec(mode="front", name="client"))
    assert "nameserver 127.0.0.11" in client.info.resolv_conf
    ip = web.info.networks["front"]["IPAddress"]
    # by name, by alias, by short id, by name.network — through getaddrinfo and resolv.conf
    for name in ("web", "www", web.id[:12], "web.front"):
        r = client.sh(f"curl -sf --max-time 5 http://{name}/")
        assert r.returncode == 0 and r.stdout == "hello from web", (name, r.stderr)
    r = client.sh("busybox nslookup web 127.0.0.11")
    assert ip in r.stdout
    # the container may run its own DNS server on :53 (the embedded one only DNATs 127.0.0.11:53)
    code = ("import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.bind(('0.0.0.0', 53))\n"
            "t = socket.socket()\nt.bind(('0.0.0.0', 53))\nt.listen()\nprint('bound')\n")
    r = client.sh(f"{sys.executable} -c \"{code}\" && busybox nslookup www 127.0.0.11")
    assert r.returncode == 0 and "bound" in r.stdout and ip in r.stdout, r.stdout + r.stderr
    # another user network: no route between the bridges, and no names of "front"
    lab.mgr.create("back")
    other = lab.run(Spec(mode="back", name="other"))
    assert other.sh(f"curl -sf --max-time 2 http://{ip}/").returncode != 0
    assert other.sh("busybox nslookup web 127.0.0.11").returncode != 0
    # the default bridge has no embedded DNS at all
    plain = lab.run(Spec(mode="bridge", name="plain"))
    assert "127.0.0.11" not in plain.info.resolv_conf
    assert plain.sh("busybox nslookup web 127.0.0.11").returncode != 0
    assert plain.sh(f"curl -sf --max-time 2 http://{ip}/").returncode != 0


def test_published_port_from_loopback_and_from_another_host(lab: Lab) -> None:
    box = lab.run(Spec(mode="bridge", name="pub", port_bindings={"80/tcp": [{"HostPort": ""}]}))
    box.httpd(80, "published")
    host_port = int(box.info.ports["80/tcp"][0]["HostPort"])
    assert box.info.ports["80/tcp"][0]["HostIp"] == "0.0.0.0"
    assert http_get("127.0.0.1", host_port).endswith("published")
    # a client on another machine reaches the host's address on its side of the link
    other = lab.fake_host(71)
    r = other.sh(f"curl -sf --max-time 5 http://{other.host_ip}:{host_port}/")
    assert r.returncode == 0 and r.stdout == "published", r.stderr
    # but not the container's own address, even with a route to it through this host
    subnet = lab.mgr.inspect("bridge")["IPAM"]["Config"][0]["Subnet"]
    assert other.sh(f"ip route add {subnet} via {other.host_ip}").returncode == 0
    ip = box.info.networks["bridge"]["IPAddress"]
    assert other.sh(f"curl -sf --max-time 2 http://{ip}/").returncode != 0
    # hairpin: the container itself through its gateway, and a container on the same bridge
    # through the host's address
    gw = box.info.networks["bridge"]["Gateway"]
    r = box.sh(f"curl -sf --max-time 5 http://{gw}:{host_port}/")
    assert r.returncode == 0 and r.stdout == "published", r.stderr
    peer = lab.run(Spec(mode="bridge", name="peer"))
    r = peer.sh(f"curl -sf --max-time 5 http://{other.host_ip}:{host_port}/")
    assert r.returncode == 0 and r.stdout == "published", r.stderr


def test_publish_all_maps_exposed_ports_and_host_ip_binding(lab: Lab) -> None:
    box = lab.run(Spec(mode="bridge", publish_all=True, exposed_ports=["80/tcp", "53/udp"],
                       port_bindings={"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}))
    box.httpd(80, "all")
    box.httpd(8080, "eighty-eighty")
    p80 = int(box.info.ports["80/tcp"][0]["HostPort"])
    assert box.info.ports["53/udp"][0]["HostPort"].isdigit()
    assert http_get("127.0.0.1", p80).endswith("all")
    b = box.info.ports["8080/tcp"][0]
    assert b["HostIp"] == "127.0.0.1"
    assert http_get("127.0.0.1", int(b["HostPort"])).endswith("eighty-eighty")


def test_port_conflicts_are_found_before_setup(lab: Lab) -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        taken = s.getsockname()[1]
        cid = os.urandom(32).hex()
        with pytest.raises(Conflict, match="port is already allocated"):
            lab.mgr.setup_container(cid, Spec(mode="bridge", port_bindings={"80/tcp": [{"HostPort": str(taken)}]}))
        assert not os.path.exists(os.path.join(lab.mgr.netns_dir, cid))
        assert lab.mgr.inspect("bridge")["Containers"] == {}
    first = lab.run(Spec(mode="bridge", port_bindings={"80/tcp": [{"HostPort": ""}]}))
    port = first.info.ports["80/tcp"][0]["HostPort"]
    with pytest.raises(Conflict, match="port is already allocated"):
        lab.mgr.setup_container(os.urandom(32).hex(),
                                Spec(mode="bridge", port_bindings={"81/tcp": [{"HostPort": port}]}))
    # a range takes the next free port of the range
    lo = int(port)
    box = lab.run(Spec(mode="bridge", port_bindings={"81/tcp": [{"HostPort": f"{lo}-{lo + 20}"}]}))
    assert lo < int(box.info.ports["81/tcp"][0]["HostPort"]) <= lo + 20
    # nobody else can take a published port while it is published
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("0.0.0.0", lo))


def test_egress_is_masqueraded_and_internal_networks_have_none(lab: Lab) -> None:
    outside = lab.fake_host(72)
    outside.httpd(8000, "outside world")
    box = lab.run(Spec(mode="bridge"))
    # the outside host has no route to the container subnet: only masquerade makes this work
    r = box.sh(f"curl -sf --max-time 5 http://{outside.ip}:8000/")
    assert r.returncode == 0 and r.stdout == "outside world", r.stderr
    lab.mgr.create("lonely", options={"com.docker.network.bridge.enable_icc": "false"})
    a = lab.run(Spec(mode="lonely", name="a"))
    a.httpd(80, "a")
    b = lab.run(Spec(mode="lonely", name="b"))
    assert b.sh("curl -sf --max-time 2 http://a/").returncode != 0  # no inter-container traffic
    assert b.sh(f"curl -sf --max-time 5 http://{outside.ip}:8000/").returncode == 0  # egress still
    lab.mgr.create("small", options={"com.docker.network.driver.mtu": "1400"})
    small = lab.run(Spec(mode="small"))
    assert "mtu 1400" in small.sh("busybox ip link show eth0").stdout
    with pytest.raises(InvalidArgument, match="MTU"):
        lab.mgr.create("tiny", options={"com.docker.network.driver.mtu": "12"})
    lab.mgr.create("sealed", internal=True)
    inner = lab.run(Spec(mode="sealed"))
    assert inner.sh(f"curl -sf --max-time 2 http://{outside.ip}:8000/").returncode != 0


def test_restart_keeps_addresses_and_published_ports(lab: Lab) -> None:
    lab.mgr.create("keep")
    box = lab.run(Spec(mode="keep", name="kept", port_bindings={"80/tcp": [{"HostPort": ""}]}))
    box.httpd(80, "still here")
    port = int(box.info.ports["80/tcp"][0]["HostPort"])
    ip = box.info.networks["keep"]["IPAddress"]
    filt = f"tugboat-{lab.instance}"
    before = subprocess.run(["nft", "list", "table", "inet", filt], capture_output=True, text=True).stdout
    lab.reopen()
    lab.mgr.restore()  # twice: idempotent
    after = subprocess.run(["nft", "list", "table", "inet", filt], capture_output=True, text=True).stdout
    assert before == after
    assert http_get("127.0.0.1", port).endswith("still here")
    info = lab.mgr.container_info(box.id)
    assert info.networks["keep"]["IPAddress"] == ip
    # names still resolve after the restart (the DNS sockets were reopened in the netns)
    client = lab.run(Spec(mode="keep", name="c2"))
    r = client.sh("curl -sf --max-time 5 http://kept/")
    assert r.returncode == 0 and r.stdout == "still here", r.stderr
    # and the port is still held against others
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("0.0.0.0", port))


def test_bad_input_leaves_nothing_half_configured(lab: Lab) -> None:
    one_bridge = lab.mgr.create("one", subnet="10.213.0.0/24")["Options"].get("com.docker.network.bridge.name")
    bridge = next(n.bridge for n in lab.mgr._networks.values() if n.name == "one")
    assert one_bridge is None and bridge.startswith("br-")
    with pytest.raises(Conflict, match="overlaps"):
        lab.mgr.create("two", subnet="10.213.0.128/25")
    with pytest.raises(InvalidArgument):
        lab.mgr.create("three", subnet="10.300.0.0/24")
    with pytest.raises(InvalidArgument):
        lab.mgr.create("four", subnet="10.213.1.1/24")
    with pytest.raises(InvalidArgument):
        lab.mgr.create("five", subnet="10.213.2.0/24", gateway="10.213.3.1")
    with pytest.raises(Conflict, match="already exists"):
        lab.mgr.create("one")
    host_net = next(n for n in lab.mgr._host_route_nets() if not n.startswith("0."))
    with pytest.raises(Conflict, match="host route"):
        lab.mgr.create("onhost", subnet=host_net)
    names = [n["Name"] for n in lab.mgr.list()]
    assert sorted(names) == ["bridge", "host", "none", "one"]
    box = lab.run(Spec(mode="one", name="busy"))
    with pytest.raises(Conflict, match="active endpoints"):
        lab.mgr.remove("one")
    with pytest.raises(PermissionDenied):
        lab.mgr.remove("bridge")
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        lab.mgr.setup_container(os.urandom(32).hex(), Spec(mode="bridge", ips={"bridge": "172.17.0.9"}))
    with pytest.raises(InvalidArgument, match="user defined networks"):
        lab.mgr.setup_container(os.urandom(32).hex(), Spec(mode="bridge", aliases={"bridge": ["x"]}))
    with pytest.raises(NotFound):
        lab.mgr.remove("nope")
    with pytest.raises(Conflict, match="Address already in use"):
        lab.mgr.setup_container(os.urandom(32).hex(),
                                Spec(mode="one", ips={"one": box.info.networks["one"]["IPAddress"]}))
    # a container restarted with its --ip gets it back at once (no wait for the veth reaper)
    fixed_ip = "10.213.0.77"
    fixed = lab.run(Spec(mode="one", ips={"one": fixed_ip}))
    lab.mgr.teardown_container(fixed.id)
    again = lab.mgr.setup_container(fixed.id, Spec(mode="one", ips={"one": fixed_ip}))
    assert again.networks["one"]["IPAddress"] == fixed_ip
    lab.mgr.teardown_container(fixed.id)
    lab.mgr.teardown_container(box.id)
    lab.mgr.teardown_container(box.id)  # idempotent
    lab.mgr.remove("one")
    assert bridge not in our_links(lab) and kernel.link_index(lab.mgr.ipr, bridge) is None


def test_connect_disconnect_and_modes(lab: Lab) -> None:
    lab.mgr.create("n1")
    lab.mgr.create("n2")
    srv = lab.run(Spec(mode="n2", name="srv", ips={"n2": ""}))
    srv.httpd(80, "n2 server")
    cli = lab.run(Spec(mode="n1", name="cli"))
    assert cli.sh("curl -sf --max-time 2 http://srv/").returncode != 0
    ep = lab.mgr.connect(cli.id, "n2", aliases=["cli-alias"])
    assert ep["IPAddress"] and "cli-alias" in ep["DNSNames"]
    r = cli.sh("curl -sf --max-time 5 http://srv/")
    assert r.returncode == 0 and r.stdout == "n2 server", r.stderr
    assert lab.mgr.inspect("n2")["Containers"].keys() == {srv.id, cli.id}
    with pytest.raises(Conflict):
        lab.mgr.connect(cli.id, "n2")
    lab.mgr.disconnect(cli.id, "n2")
    assert cli.sh("curl -sf --max-time 2 http://srv/").returncode != 0
    # several networks at creation (API >= 1.44): eth0 and eth1, names on both
    both = lab.run(Spec(mode="n1", name="both", extra_networks=["n2"], aliases={"n2": ["b2"]}))
    assert set(both.info.networks) == {"n1", "n2"}
    r = both.sh("curl -sf --max-time 5 http://srv/")
    assert r.returncode == 0 and r.stdout == "n2 server", r.stderr
    r = srv.sh("busybox nslookup b2 127.0.0.11")
    assert both.info.networks["n2"]["IPAddress"] in r.stdout
    # none: only lo; container:<id>: the same netns; host: no netns
    none = lab.run(Spec(mode="none"))
    r = none.sh("busybox ip -o link")
    assert r.stdout.count("\n") == 1 and "lo" in r.stdout
    joined = lab.mgr.setup_container(os.urandom(32).hex(), Spec(mode=f"container:{srv.id[:12]}"))
    assert joined.netns_path == srv.info.netns_path
    host = lab.mgr.setup_container(os.urandom(32).hex(), Spec(mode="host", extra_hosts=["db:10.0.0.5"]))
    assert host.netns_path is None and "10.0.0.5\tdb" in host.hosts


def test_embedded_dns_forwards_other_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from network_fixtures import FakeUpstream
    from network_fixtures import Lab as _Lab

    with FakeUpstream({"example.test.": "198.18.9.9"}) as up:
        work = tmp_path / "w"
        work.mkdir()
        lb = _Lab(str(tmp_path / "root"), str(work), dns_upstreams=[f"127.0.0.1:{up.port}"])
        try:
            lb.mgr.create("fwd")
            box = lb.run(Spec(mode="fwd", name="asker", extra_hosts=["gw:host-gateway"]))
            r = box.sh("busybox nslookup example.test 127.0.0.11")
            assert "198.18.9.9" in r.stdout, r.stdout + r.stderr
            assert f"\t{box.id[:12]}\n" in box.sh("cat /etc/hosts").stdout
            assert box.info.networks["fwd"]["Gateway"] + "\tgw" in box.info.hosts
        finally:
            lb.close()
    assert f"tugboat-{lb.instance}" not in nft_tables()


def test_udp_published_port(lab: Lab) -> None:
    box = lab.run(Spec(mode="bridge", port_bindings={"9999/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}))
    # a UDP echo server in the container
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 9999))\n"
            "while True:\n    d, a = s.recvfrom(100)\n    s.sendto(b'pong', a)\n")
    box.spawn(f"{sys.executable} -c \"{code}\"")
    port = int(box.info.ports["9999/udp"][0]["HostPort"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        got = b""
        for _ in range(10):  # the server may not be listening yet: retry
            s.sendto(b"ping\n", ("127.0.0.1", port))
            try:
                got = s.recv(100)
                break
            except TimeoutError:
                continue
    assert got.strip() == b"pong"
