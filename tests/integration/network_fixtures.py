"""Fixtures for the network area's root tests: a NetworkManager on its own kernel objects,
busybox "containers" in the netns the manager makes, and test-made "other hosts" (a netns wired
to the host through a veth pair whose both ends the test owns, in 198.18.0.0/15, the benchmark
range). Traffic goes only to 127.0.0.1 and to addresses inside namespaces made here."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tugboat.network import kernel
from tugboat.network.manager import NetworkManager
from tugboat.network.models import ContainerNetworkInfo, ContainerNetworkSpec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def rand(n: int = 4) -> str:
    return os.urandom(8).hex()[:n]


def cid() -> str:
    return os.urandom(32).hex()


class Box:
    """A process tree in a container netns, with its own /etc/resolv.conf and /etc/hosts."""

    def __init__(self, info: ContainerNetworkInfo, workdir: str, container_id: str) -> None:
        self.info = info
        self.id = container_id
        self.dir = os.path.join(workdir, container_id[:12])
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write(info.resolv_conf)
        with open(os.path.join(self.dir, "hosts"), "w") as f:
            f.write(info.hosts)
        self.procs: list[subprocess.Popen] = []

    def argv(self, script: str) -> list[str]:
        assert self.info.netns_path
        pre = (f"mount --bind {self.dir}/resolv.conf /etc/resolv.conf && "
               f"mount --bind {self.dir}/hosts /etc/hosts && ")
        return ["nsenter", f"--net={self.info.netns_path}", "unshare", "-m", "--propagation", "private",
                "/bin/sh", "-c", pre + script]

    def sh(self, script: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(script), capture_output=True, text=True, timeout=timeout)

    def spawn(self, script: str) -> subprocess.Popen:
        p = subprocess.Popen(self.argv("exec " + script), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def httpd(self, port: int = 80, body: str = "hello") -> None:
        www = os.path.join(self.dir, f"www{port}")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write(body)
        self.spawn(f"{BUSYBOX} httpd -f -p {port} -h {www}")
        wait_port_in(self.info.netns_path or "", port)

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        self.procs.clear()


def wait_port_in(netns: str, port: int, timeout: float = 5.0) -> None:
    """Wait until something listens on TCP ``port`` inside ``netns``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        def probe() -> bool:
            with socket.socket() as s:
                s.settimeout(0.2)
                return s.connect_ex(("127.0.0.1", port)) == 0

        if kernel.in_netns(netns, probe):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {netns}")


def http_get(host: str, port: int, timeout: float = 5.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


class Lab:
    """The manager under test plus the boxes and fake hosts a test made; cleans up everything."""

    def __init__(self, root: str, workdir: str, **kw: Any) -> None:
        self.instance = "t" + rand(4)
        self.root = root
        self.workdir = workdir
        self.kw = kw
        self.mgr = NetworkManager(root, instance=self.instance, **kw)
        self.mgr.restore()
        self.boxes: list[Box] = []
        self.hosts: list[FakeHost] = []

    def run(self, spec: ContainerNetworkSpec, container_id: str | None = None) -> Box:
        c = container_id or cid()
        info = self.mgr.setup_container(c, spec)
        box = Box(info, self.workdir, c)
        self.boxes.append(box)
        return box

    def fake_host(self, third_octet: int) -> FakeHost:
        h = FakeHost(self.workdir, third_octet)
        self.hosts.append(h)
        return h

    def reopen(self) -> None:
        """Simulate a daemon restart: drop the manager (no teardown) and restore a new one."""
        self.mgr.shutdown(remove_all=False)
        self.mgr = NetworkManager(self.root, instance=self.instance, **self.kw)
        self.mgr.restore()

    def close(self) -> None:
        for b in self.boxes:
            b.stop()
        for h in self.hosts:
            h.close()
        self.mgr.shutdown(remove_all=True)


class FakeHost:
    """Another machine: its own netns, wired to the host by a veth pair 198.18.N.1 <-> .2/24."""

    def __init__(self, workdir: str, n: int) -> None:
        self.path = os.path.join(workdir, f"host-{rand(6)}")
        self.host_if = f"tbh{rand(6)}"
        self.host_ip = f"198.18.{n}.1"
        self.ip = f"198.18.{n}.2"
        self.procs: list[subprocess.Popen] = []
        kernel.create_netns(self.path, kernel.lo_up)
        ipr = kernel.iproute()
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                ipr.link("add", ifname=self.host_if, kind="veth", state="up",
                         peer={"ifname": "eth0", "net_ns_fd": fd})
            finally:
                os.close(fd)
            idx = kernel.link_index(ipr, self.host_if)
            ipr.addr("add", index=idx, address=self.host_ip, prefixlen=24)
        finally:
            ipr.close()
        with kernel.iproute_in(self.path) as ns:
            idx = kernel.link_index(ns, "eth0")
            ns.addr("add", index=idx, address=self.ip, prefixlen=24)
            ns.link("set", index=idx, state="up")

    def argv(self, script: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", "/bin/sh", "-c", script]

    def sh(self, script: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(script), capture_output=True, text=True, timeout=timeout)

    def httpd(self, port: int, body: str) -> None:
        www = self.path + "-www"
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write(body)
        self.procs.append(subprocess.Popen(self.argv(f"exec {BUSYBOX} httpd -f -p {port} -h {www}"),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port_in(self.path, port)

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        ipr = kernel.iproute()
        try:
            kernel.delete_link(ipr, self.host_if)
        finally:
            ipr.close()
        kernel.remove_netns(self.path)


def our_links(lab: Lab) -> list[str]:
    """Interfaces of the lab's manager still present in the host netns."""
    ipr = kernel.iproute()
    try:
        names = [link.get("ifname") for link in ipr.get_links()]
    finally:
        ipr.close()
    bridges = {n.bridge for n in lab.mgr._networks.values()}
    veths = {ep.host_veth for c in lab.mgr._containers.values() for ep in c.endpoints}
    return [n for n in names if n in bridges or n in veths]


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


@pytest.fixture(name="lab")
def lab_fixture(tmp_path: Any) -> Iterator[Lab]:
    for b in ("nsenter", "unshare", "nft"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} is not installed")
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    prior = kernel.read_sysctl("net.ipv4.ip_forward")
    work = tmp_path / "work"
    work.mkdir()
    lb = Lab(str(tmp_path / "root"), str(work))
    try:
        yield lb
    finally:
        lb.close()
        # nothing of ours may remain
        assert f"tugboat-{lb.instance}" not in nft_tables()
        assert f"tugboat-nat-{lb.instance}" not in nft_tables()
        leftover = [f for f in os.listdir(lb.mgr.netns_dir)]
        assert leftover == [], leftover
        if prior is not None and not _other_tugboat_bridges():
            assert kernel.read_sysctl("net.ipv4.ip_forward") == prior


def _other_tugboat_bridges() -> bool:
    return "tugboat" in nft_tables()




class FakeUpstream:
    """A tiny DNS server on 127.0.0.1 (UDP) answering A questions from ``records``."""

    def __init__(self, records: dict[str, str]) -> None:
        import threading

        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        from dnslib import QTYPE, RR, A, DNSRecord

        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            req = DNSRecord.parse(data)
            reply = req.reply()
            name = str(req.q.qname)
            if req.q.qtype == QTYPE.A and name in self.records:
                reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A(self.records[name]), ttl=60))
            self.sock.sendto(reply.pack(), addr)

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join(timeout=2)
        self.sock.close()
