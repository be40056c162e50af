"""Test-made network namespaces acting as a node and its pods (nodes area). Everything is removed after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed: {r.stderr}")
    return r


@dataclass
class Lab:
    """A 'node' netns with a bridge (``gw``/24), and pod netns attached to it."""

    tag: str
    subnet: str  # e.g. "10.250.7"
    node: str = ""
    pods: dict[str, str] = field(default_factory=dict)  # netns -> ip
    procs: list[subprocess.Popen] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def gw(self) -> str:
        return f"{self.subnet}.1"

    def setup(self) -> None:
        self.node = f"tn-{self.tag}"
        sh("ip", "netns", "add", self.node)
        self.namespaces.append(self.node)
        sh("ip", "link", "set", "lo", "up", ns=self.node)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.node)
        sh("ip", "addr", "add", f"{self.gw}/24", "dev", "br0", ns=self.node)
        sh("ip", "link", "set", "br0", "up", ns=self.node)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.node)
        sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", ns=self.node, check=False)
        # the service CIDR goes to the bridge: nothing can leak out of the lab
        sh("ip", "route", "add", "10.96.0.0/12", "dev", "br0", ns=self.node)

    def add_pod(self, idx: int) -> tuple[str, str]:
        ns = f"tp-{self.tag}-{idx}"
        ip = f"{self.subnet}.{idx}"
        sh("ip", "netns", "add", ns)
        self.namespaces.insert(0, ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        host_if = f"v{idx}"
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.node)
        sh("ip", "link", "set", host_if, "master", "br0", "up", ns=self.node)
        # as the node agent does: a pod may reach itself through a service (br_netfilter hairpin)
        sh("ip", "link", "set", host_if, "type", "bridge_slave", "hairpin", "on", ns=self.node)
        sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", self.gw, ns=ns)
        self.pods[ns] = ip
        return ns, ip

    def httpd(self, ns: str, port: int, body: str, root: str) -> None:
        d = os.path.join(root, f"www-{ns}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write(body)
        p = subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", str(port), "-h", d],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)

    def get(self, ns: str | None, url: str, timeout: float = 3) -> str | None:
        # (busybox-static's wget crashes with -T: bound the time with timeout(1) instead)
        r = sh("timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url, ns=ns, check=False,
               timeout=timeout + 5)
        return r.stdout if r.returncode == 0 else None

    def teardown(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(5)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def lab(subnet: str) -> Iterator[Lab]:
    lb = Lab(tag=uuid.uuid4().hex[:6], subnet=subnet)
    try:
        lb.setup()
        yield lb
    finally:
        lb.teardown()
