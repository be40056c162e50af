"""Published ports: parsing docker's PortBindings, choosing host ports, holding them.

A published port is reserved by a socket the daemon keeps bound (not listening) on the host
address and port, as dockerd does: a second container, or any other program, asking for the
same port then fails with "port is already allocated" / EADDRINUSE before anything is set up.
Traffic itself never reaches that socket: the nft DNAT rules redirect it first.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from dataclasses import dataclass

from tugboat.errors import Conflict, InvalidArgument


@dataclass
class Request:
    proto: str
    container_port: int
    host_ip: str  # "" = all
    host_port_lo: int  # 0 = any free port
    host_port_hi: int


def parse_port_proto(key: str) -> tuple[int, str]:
    """"80/tcp" -> (80, "tcp"); "80" -> (80, "tcp")."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto {proto!r} in port {key!r}")
    try:
        n = int(port)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not 0 < n < 65536:
        raise InvalidArgument(f"invalid containerPort: {port}")
    return n, proto


def parse_host_port(text: str) -> tuple[int, int]:
    """"" -> (0, 0); "8080" -> (8080, 8080); "8000-8010" -> (8000, 8010)."""
    text = (text or "").strip()
    if not text:
        return 0, 0
    lo_s, _, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else lo
    except ValueError:
        raise InvalidArgument(f"invalid hostPort: {text}") from None
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535 and lo <= hi):
        raise InvalidArgument(f"invalid hostPort: {text}")
    return lo, hi


def requests_from(port_bindings: dict[str, list[dict[str, str]] | None], publish_all: bool,
                  exposed: list[str]) -> list[Request]:
    out: list[Request] = []
    seen: set[tuple[int, str]] = set()
    for key, binds in (port_bindings or {}).items():
        cport, proto = parse_port_proto(key)
        seen.add((cport, proto))
        for b in binds or [{}]:
            host_ip = (b.get("HostIp") or "").strip("[]")
            if host_ip:
                try:
                    ip = ipaddress.ip_address(host_ip)
                except ValueError:
                    raise InvalidArgument(f"invalid IP address: {host_ip}") from None
                if ip.version != 4:
                    continue  # IPv6 host bindings: no IPv6 here, skipped as docker does without ip6
                if str(ip) == "0.0.0.0":
                    host_ip = ""
            lo, hi = parse_host_port(b.get("HostPort") or "")
            out.append(Request(proto, cport, host_ip, lo, hi))
    if publish_all:
        for key in exposed or []:
            cport, proto = parse_port_proto(key)
            if (cport, proto) not in seen:
                seen.add((cport, proto))
                out.append(Request(proto, cport, "", 0, 0))
    return out


def _sock_type(proto: str) -> int:
    return socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM


def hold(proto: str, host_ip: str, port: int) -> socket.socket:
    """Bind (don't listen) ``host_ip:port`` for ``proto``; port 0 picks a free one.

    Raises Conflict when the address is in use."""
    if proto == "sctp":
        s = socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
    else:
        s = socket.socket(socket.AF_INET, _sock_type(proto))
    try:
        s.bind((host_ip or "0.0.0.0", port))
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            where = f"{host_ip or '0.0.0.0'}:{port}"
            raise Conflict(f"Bind for {where} failed: port is already allocated") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidArgument(f"cannot publish on {host_ip}: not an address of this host") from None
        raise
    return s


def release(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
