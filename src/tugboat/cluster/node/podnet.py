"""Pod networking of one node (what a bridge CNI plugin does for the kubelet).

The node owns a bridge (default ``tugpods0``) holding the gateway address of its pod subnet.
Each pod sandbox is created by the engine with ``NetworkMode: none`` (a netns with only ``lo``);
we then add a veth pair, the pod end moved into the sandbox's netns as ``eth0`` with the pod's
IP and a default route through the gateway, the node end enslaved to the bridge (hairpin on,
so a pod can reach itself through a service). Pod IPs are not masqueraded inside the cluster
CIDR (other nodes route to them through this node's InternalIP); traffic leaving the cluster
CIDR is masqueraded (table ``ip tugboat-podnet``).

IP allocations are kept in ``<root>/ipam.json`` (ip -> pod uid), written atomically.

Attaching a pod forks nothing: one rtnetlink request makes the veth pair (peer in the sandbox's
netns, node end on the bridge and up), the pod end is configured by ioctls from a thread that
entered the pod's netns (``tugboat.network.kernel``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import socket
import struct
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


# rtnetlink (linux/rtnetlink.h, if_link.h, veth.h)
_RTM_NEWLINK, _RTM_DELLINK, _NLMSG_ERROR = 16, 17, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFLA_IFNAME, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_PID = 3, 10, 18, 19
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _IFLA_INFO_SLAVE_KIND, _IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
_VETH_INFO_PEER, _IFLA_BRPORT_MODE = 1, 4
_IFF_UP = 0x1


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _ifinfo(flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, flags, change)


def _name(n: str) -> bytes:
    return n.encode() + b"\0"


def _rtnl(msg_type: int, flags: int, payload: bytes) -> None:
    """Send one rtnetlink request and wait for its acknowledgement (raises OSError on a NACK)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sk:
        sk.bind((0, 0))
        sk.sendto(struct.pack("=IHHII", 16 + len(payload), msg_type, flags | _NLM_F_REQUEST | _NLM_F_ACK, 1, 0)
                  + payload, (0, 0))
        while True:
            data = sk.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _f, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if kind == _NLMSG_ERROR and seq == 1:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return
                off += max(16, (length + 3) & ~3)


def add_veth_to_bridge(host_if: str, bridge: str, peer: str, peer_pid: int) -> None:
    """``ip link add HOST type veth peer name PEER netns PID master BRIDGE up``, in one request."""
    bridge_index = socket.if_nametoindex(bridge)
    peer_info = _ifinfo() + _attr(_IFLA_IFNAME, _name(peer)) + _attr(_IFLA_NET_NS_PID, struct.pack("=I", peer_pid))
    linkinfo = _attr(_IFLA_INFO_KIND, b"veth\0") + _attr(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))
    _rtnl(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL,
          _ifinfo(_IFF_UP, _IFF_UP) + _attr(_IFLA_IFNAME, _name(host_if))
          + _attr(_IFLA_MASTER, struct.pack("=I", bridge_index)) + _attr(_IFLA_LINKINFO, linkinfo))


def set_hairpin(name: str) -> None:
    """``ip link set NAME type bridge_slave hairpin on`` (netlink: /sys/class/net shows the
    netns that mounted /sys, not necessarily ours)."""
    slave = _attr(_IFLA_INFO_SLAVE_KIND, b"bridge\0") + _attr(_IFLA_INFO_SLAVE_DATA, _attr(_IFLA_BRPORT_MODE, b"\1"))
    _rtnl(_RTM_NEWLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)) + _attr(_IFLA_LINKINFO, slave))


def delete_link(name: str) -> bool:
    """``ip link del NAME``; False when there was no such link."""
    try:
        _rtnl(_RTM_DELLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


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
        from tugboat.network import kernel

        ip = self.allocate(uid)
        hif = self.host_ifname(uid)
        try:
            delete_link(hif)  # a leftover of an earlier attempt
            add_veth_to_bridge(hif, self.bridge, "eth0", pid)
            set_hairpin(hif)  # a pod may reach itself through a service
            kernel.in_netns(f"/proc/{pid}/ns/net", lambda: kernel.configure_iface(
                "eth0", ip, self.prefix, self.gateway))
        except (OSError, TugError) as e:
            with contextlib.suppress(OSError):
                delete_link(hif)
            self.release(uid)
            raise TugError(f"pod network setup failed: {e}") from None
        return ip

    def detach(self, uid: str) -> None:
        with contextlib.suppress(OSError):
            delete_link(self.host_ifname(uid))
        self.release(uid)
