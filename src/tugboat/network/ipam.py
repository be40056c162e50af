"""IP address management: subnet validation, default pools, address allocation.

Pure logic (no kernel, no disk): the manager persists allocations inside the endpoint records
(``containers/<id>.json``) and rebuilds a :class:`Pool` per network from them at start-up.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from tugboat.errors import Conflict, InvalidArgument, Unavailable

# Where user-defined networks get their subnets when none is given (docker's default pools:
# 172.17-31.0.0/16, then 192.168.0.0/16 in /20 steps). The default bridge takes the first free.
DEFAULT_BRIDGE_CANDIDATES = ["172.17.0.0/16", *(f"172.{n}.0.0/16" for n in range(18, 32))]


def default_pools() -> Iterable[ipaddress.IPv4Network]:
    for n in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{n}.0.0/16")
    for n in range(0, 256, 16):
        yield ipaddress.IPv4Network(f"192.168.{n}.0/20")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """A user's --subnet: must be IPv4 CIDR notation with no host bits set."""
    if "/" not in text:
        raise InvalidArgument(f"invalid subnet {text!r}: expected CIDR notation such as 172.20.0.0/16")
    text = text.strip()
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid subnet {text!r}: not a valid CIDR address") from None
        raise InvalidArgument(f"invalid subnet {text}: it should be {loose} (host bits are set)") from None
    if net.version != 4:
        raise InvalidArgument(f"invalid subnet {text!r}: only IPv4 networks are supported")
    if net.prefixlen > 30:
        raise InvalidArgument(f"invalid subnet {text}: too small (at most /30)")
    return net


def parse_ip(text: str, what: str = "IP address") -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}") from None
    if ip.version != 4:
        raise InvalidArgument(f"invalid {what} {text!r}: only IPv4 is supported")
    return ip


def overlaps(a: str, b: str) -> bool:
    return ipaddress.IPv4Network(a).overlaps(ipaddress.IPv4Network(b))


def check_overlap(subnet: str, used: Iterable[tuple[str, str]]) -> None:
    """Raise Conflict if ``subnet`` overlaps one of ``used`` ((subnet, owner name) pairs)."""
    for other, owner in used:
        if other and overlaps(subnet, other):
            raise Conflict(f"invalid pool request: Pool overlaps with other one on this address space "
                           f"({subnet} overlaps {other} of {owner})")


def pick_subnet(taken: Iterable[str], candidates: Iterable[ipaddress.IPv4Network] | None = None) -> str:
    """The first default pool that overlaps nothing in ``taken`` (networks and host routes)."""
    taken_nets = [ipaddress.IPv4Network(t, strict=False) for t in taken if t]
    for cand in candidates if candidates is not None else default_pools():
        if not any(cand.overlaps(t) for t in taken_nets):
            return str(cand)
    raise Unavailable("all predefined address pools have been fully subnetted")


def plan_network(subnet: str, gateway: str | None, ip_range: str | None) -> tuple[str, str, str]:
    """Validate --subnet/--gateway/--ip-range together; returns (subnet, gateway, ip_range)."""
    net = parse_subnet(subnet)
    if gateway:
        gw = parse_ip(gateway, "gateway")
        if gw not in net:
            raise InvalidArgument(f"invalid gateway {gateway}: not in subnet {net}")
        if gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"invalid gateway {gateway}: network or broadcast address of {net}")
    else:
        gw = net.network_address + 1
    rng = ""
    if ip_range:
        r = parse_subnet(ip_range) if "/" in ip_range else None
        if r is None:
            raise InvalidArgument(f"invalid ip-range {ip_range!r}: expected CIDR notation")
        if not r.subnet_of(net):
            raise InvalidArgument(f"invalid ip-range {ip_range}: not inside subnet {net}")
        rng = str(r)
    return str(net), str(gw), rng


class Pool:
    """The addresses of one network: which are allocated, and the next one to hand out."""

    def __init__(self, subnet: str, gateway: str, ip_range: str = "") -> None:
        self.net = ipaddress.IPv4Network(subnet)
        self.gateway = ipaddress.IPv4Address(gateway)
        self.range = ipaddress.IPv4Network(ip_range) if ip_range else self.net
        self.used: set[int] = set()
        self._next = int(self.range.network_address)

    def _reserved(self, a: int) -> bool:
        return (
            a == int(self.net.network_address)
            or a == int(self.net.broadcast_address)
            or a == int(self.gateway)
        )

    def mark(self, ip: str) -> None:
        self.used.add(int(ipaddress.IPv4Address(ip)))

    def release(self, ip: str) -> None:
        self.used.discard(int(ipaddress.IPv4Address(ip)))

    def allocate(self, requested: str | None = None) -> str:
        if requested:
            ip = parse_ip(requested)
            if ip not in self.net:
                raise InvalidArgument(f"invalid IP {requested}: not in subnet {self.net}")
            a = int(ip)
            if self._reserved(a):
                raise Conflict(f"Address already in use: {requested} is reserved in {self.net}")
            if a in self.used:
                raise Conflict(f"Address already in use: {requested}")
            self.used.add(a)
            return requested
        lo, hi = int(self.range.network_address), int(self.range.broadcast_address)
        size = hi - lo + 1
        a = self._next if lo <= self._next <= hi else lo
        for _ in range(size):
            if a > hi:
                a = lo
            if not self._reserved(a) and a not in self.used:
                self.used.add(a)
                self._next = a + 1
                return str(ipaddress.IPv4Address(a))
            a += 1
        raise Unavailable(f"no available IPv4 addresses on this network's address pools ({self.range})")


def mac_for(ip: str) -> str:
    """docker's MAC scheme: 02:42 followed by the four bytes of the IPv4 address."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def random_hex(n: int) -> str:
    return os.urandom((n + 1) // 2).hex()[:n]
