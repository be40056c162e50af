"""Pod networking of one node (what a bridge CNI plugin does for the kubelet).

The node owns a bridge (default ``tugpods0``) holding the gateway address of its pod subnet.
Each pod sandbox is created by the engine with ``NetworkMode: none`` (a netns with only ``lo``);
we then add a veth pair, the pod end moved into the sandbox's netns as ``eth0`` with the pod's
IP and a default route through the gateway, the node end enslaved to the bridge (hairpin on,
so a pod can reach itself through a service). Pod IPs are not masqueraded inside the cluster
CIDR (other nodes route to them through this node's InternalIP); traffic leaving the cluster
CIDR is masqueraded (table ``ip tugboat-podnet``).

IP allocations are kept in ``<root>/ipam.json`` (ip -> pod uid), written atomically.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import threading

from tugboat.errors import TugError
from tugboat.util.fs import write_atomic

NFT_TABLE = "tugboat-podnet"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise TugError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class PodNetwork:
    def __init__(self, root: str, pod_cidr: str, cluster_cidr: str, bridge: str = "tugpods0") -> None:
        self.root = root
        self.net = ipaddress.ip_network(pod_cidr)
        self.cluster_cidr = cluster_cidr
        self.bridge = bridge
        hosts = self.net.hosts()
        self.gateway = str(next(hosts))
        self.prefix = self.net.prefixlen
        self._lock = threading.Lock()
        self._path = os.path.join(root, "ipam.json")
        self._alloc: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError), open(self._path) as f:
            self._alloc = dict(json.load(f))

    # ---- node level
    def setup(self) -> None:
        if _ip("link", "show", self.bridge, check=False).returncode != 0:
            _ip("link", "add", self.bridge, "type", "bridge")
        addrs = _ip("-4", "-o", "addr", "show", "dev", self.bridge).stdout
        if f"{self.gateway}/{self.prefix}" not in addrs:
            _ip("addr", "replace", f"{self.gateway}/{self.prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for path, val in (("/proc/sys/net/ipv4/ip_forward", "1"), ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")):
            with contextlib.suppress(OSError), open(path, "w") as f:
                f.write(val)
        script = (f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n"
                  "  chain postrouting {\n    type nat hook postrouting priority srcnat + 1; policy accept;\n"
                  f"    ip saddr {self.net} ip daddr != {self.cluster_cidr} oifname != \"{self.bridge}\" masquerade\n"
                  "  }\n}\n")
        r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
        if r.returncode != 0:
            raise TugError(f"nft: {r.stderr.strip()}")

    def teardown(self) -> None:
        _ip("link", "del", self.bridge, check=False)
        subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], capture_output=True)

    # ---- IPAM
    def _save(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        write_atomic(self._path, json.dumps(self._alloc).encode())

    def allocate(self, uid: str) -> str:
        with self._lock:
            for ip, owner in self._alloc.items():
                if owner == uid:
                    return ip
            for h in self.net.hosts():
                s = str(h)
                if s == self.gateway or s in self._alloc:
                    continue
                self._alloc[s] = uid
                self._save()
                return s
        raise TugError(f"no free address in pod subnet {self.net}")

    def ip_of(self, uid: str) -> str | None:
        with self._lock:
            return next((ip for ip, owner in self._alloc.items() if owner == uid), None)

    def release(self, uid: str) -> None:
        with self._lock:
            gone = [ip for ip, owner in self._alloc.items() if owner == uid]
            for ip in gone:
                del self._alloc[ip]
            if gone:
                self._save()

    def retain_only(self, uids: set[str]) -> None:
        with self._lock:
            before = len(self._alloc)
            self._alloc = {ip: u for ip, u in self._alloc.items() if u in uids}
            if len(self._alloc) != before:
                self._save()

    # ---- per pod
    @staticmethod
    def host_ifname(uid: str) -> str:
        return "veth" + uid.replace("-", "")[:11]

    def attach(self, uid: str, pid: int) -> str:
        """Give the netns of process ``pid`` an eth0 on the pod network; returns the pod IP."""
        ip = self.allocate(uid)
        hif = self.host_ifname(uid)
        if os.path.exists(f"/sys/class/net/{hif}"):  # a leftover of an earlier attempt
            _ip("link", "del", hif, check=False)
        # two `ip -batch` runs (host side, then inside the pod's netns) instead of a fork per step
        host = (f"link add {hif} type veth peer name eth0 netns {pid}\n"
                f"link set {hif} master {self.bridge}\n"
                f"link set {hif} type bridge_slave hairpin on\n"
                f"link set {hif} up\n")
        pod = (f"addr add {ip}/{self.prefix} dev eth0\nlink set eth0 up\n"
               f"route add default via {self.gateway}\n")
        r = subprocess.run(["ip", "-batch", "-"], input=host, capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-batch", "-"], input=pod,
                               capture_output=True, text=True)
        if r.returncode != 0:
            _ip("link", "del", hif, check=False)
            self.release(uid)
            raise TugError(f"pod network setup failed: {r.stderr.strip()}")
        return ip

    def detach(self, uid: str) -> None:
        _ip("link", "del", self.host_ifname(uid), check=False)
        self.release(uid)
