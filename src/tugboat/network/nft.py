"""nftables rules of our own tables, rebuilt whole and swapped in one atomic transaction.

We own two tables (names get a suffix when the manager runs as a named instance, e.g. in tests):

- ``inet tugboat``: ``forward`` filter chain — no new connections into a bridge from elsewhere
  except DNATed ones (published ports), inter-network isolation, ``--internal``;
  ``prerouting-raw`` — packets arriving on a bridge for 127.0.0.0/8 are dropped (CVE-2020-8558).
- ``ip tugboat-nat``: ``prerouting``/``output`` DNAT of published ports (for other hosts and for
  the host itself, 127.0.0.1 included: the bridges have ``route_localnet=1`` and such connections
  are masqueraded; the raw drop above keeps containers out of 127/8), ``postrouting`` masquerade
  for egress and hairpin.

Each change renders the full desired ruleset and runs ``add table; delete table; table {…}`` for
both tables in one transaction, so the rules are never half-applied and re-applying is
idempotent. Other programs' tables are never read or touched. The transaction runs in-process
through libnftables (ctypes; ~0.5 ms) or, if that library is missing, through ``nft -f -``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import threading
from dataclasses import dataclass, field

from tugboat.errors import Internal


@dataclass
class BridgeRules:
    ifname: str
    subnet: str
    internal: bool = False
    icc: bool = True  # com.docker.network.bridge.enable_icc
    masquerade: bool = True  # com.docker.network.bridge.enable_ip_masquerade


@dataclass
class PortRule:
    proto: str
    host_ip: str  # "" = every local address
    host_port: int
    container_ip: str
    container_port: int


@dataclass
class Ruleset:
    bridges: list[BridgeRules] = field(default_factory=list)
    ports: list[PortRule] = field(default_factory=list)


def table_names(instance: str = "") -> tuple[str, str]:
    suffix = f"-{instance}" if instance else ""
    return f"tugboat{suffix}", f"tugboat-nat{suffix}"


def _q(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def render(rs: Ruleset, instance: str = "") -> str:
    """The nft script replacing our tables with ``rs`` (one transaction)."""
    filt, nat = table_names(instance)
    out: list[str] = [f"table inet {filt} {{}}", f"delete table inet {filt}",
                      f"table ip {nat} {{}}", f"delete table ip {nat}"]
    names = [b.ifname for b in rs.bridges]
    out.append(f"table inet {filt} {{")
    out.append("  chain forward {")
    out.append("    type filter hook forward priority filter; policy accept;")
    for b in rs.bridges:
        # from elsewhere into a bridge only as replies or to published ports (docker 28's rule
        # against routing straight to container addresses)
        out.append(f"    oifname {_q(b.ifname)} iifname != {_q(b.ifname)} ct state new ct status & dnat == 0 drop")
        if not b.icc:
            out.append(f"    iifname {_q(b.ifname)} oifname {_q(b.ifname)} drop")
        if b.internal:
            out.append(f"    iifname {_q(b.ifname)} oifname != {_q(b.ifname)} drop")
            out.append(f"    oifname {_q(b.ifname)} iifname != {_q(b.ifname)} drop")
        others = [n for n in names if n != b.ifname]
        if others:
            out.append(f"    iifname {_q(b.ifname)} oifname {{ {', '.join(_q(o) for o in others)} }} drop")
    out.append("  }")
    if names:
        # CVE-2020-8558: the bridges have route_localnet=1 (for DNAT from the host's 127.0.0.1),
        # which would also route a crafted frame from a container (CAP_NET_RAW) to the host's
        # loopback services. Drop such packets before conntrack, as kube-proxy does.
        out.append("  chain prerouting-raw {")
        out.append("    type filter hook prerouting priority raw; policy accept;")
        out.append(f"    iifname {{ {', '.join(_q(n) for n in names)} }} ip daddr 127.0.0.0/8 drop")
        out.append("  }")
    out.append("}")

    out.append(f"table ip {nat} {{")
    out.append("  chain prerouting {")
    out.append("    type nat hook prerouting priority dstnat; policy accept;")
    if rs.ports:
        out.append("    fib daddr type local jump ports")
    out.append("  }")
    out.append("  chain output {")
    out.append("    type nat hook output priority -100; policy accept;")
    if rs.ports:
        out.append("    fib daddr type local jump ports")
    out.append("  }")
    out.append("  chain ports {")
    for p in rs.ports:
        match = f"ip daddr {p.host_ip} " if p.host_ip and p.host_ip != "0.0.0.0" else ""
        out.append(f"    {match}{p.proto} dport {p.host_port} dnat to {p.container_ip}:{p.container_port}")
    out.append("  }")
    out.append("  chain postrouting {")
    out.append("    type nat hook postrouting priority srcnat; policy accept;")
    for b in rs.bridges:
        # the host reaching a published port through 127.0.0.1, and hairpin (a container
        # reaching a published port of its own network through a host address)
        out.append(f"    oifname {_q(b.ifname)} ip saddr 127.0.0.0/8 masquerade")
        out.append(f"    oifname {_q(b.ifname)} ip saddr {b.subnet} ct status dnat masquerade")
        if not b.internal and b.masquerade:
            out.append(f"    ip saddr {b.subnet} oifname != {_q(b.ifname)} masquerade")
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def render_delete(instance: str = "") -> str:
    filt, nat = table_names(instance)
    return (f"table inet {filt} {{}}\ndelete table inet {filt}\n"
            f"table ip {nat} {{}}\ndelete table ip {nat}\n")


_LIB: ctypes.CDLL | None = None
_LIB_LOADED = False
_LIB_LOCK = threading.Lock()


def _libnftables() -> ctypes.CDLL | None:
    """libnftables, loaded once per process (None when it is not installed)."""
    global _LIB, _LIB_LOADED
    with _LIB_LOCK:
        if _LIB_LOADED:
            return _LIB
        _LIB_LOADED = True
        for name in ("libnftables.so.1", ctypes.util.find_library("nftables")):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
                lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            except (OSError, AttributeError):
                continue
            _LIB = lib
            break
        return _LIB


class Nft:
    """Runs nft scripts atomically: libnftables in-process when present, else ``nft -f -``.

    A context talks to the netns of the thread that created it (its netlink socket is opened
    at creation): make one per netns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ctx: int | None = None
        self._lib = _libnftables()
        if self._lib is not None:
            ctx = self._lib.nft_ctx_new(0)
            if ctx:
                self._lib.nft_ctx_buffer_output(ctx)
                self._lib.nft_ctx_buffer_error(ctx)
                self._ctx = ctx
            else:
                self._lib = None

    def close(self) -> None:
        """Free the libnftables context (and its netlink socket)."""
        with self._lock:
            if self._lib is not None and self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def run(self, script: str) -> str:
        """Run ``script`` as one transaction; returns nft's output; raises Internal on error."""
        with self._lock:
            if self._lib is not None and self._ctx is not None:
                rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
                out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
                if rc != 0:
                    err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
                    raise Internal(f"nftables transaction failed: {err.strip()}")
                return out
        try:
            proc = subprocess.run(["nft", "-f", "-"], input=script.encode(), capture_output=True,
                                  check=False)
        except FileNotFoundError:
            raise Internal("nftables is not available: install the nftables package") from None
        if proc.returncode != 0:
            raise Internal(f"nftables transaction failed: {proc.stderr.decode().strip()}")
        return proc.stdout.decode()

    def list_table(self, family: str, name: str) -> str | None:
        try:
            return self.run(f"list table {family} {name}")
        except Internal:
            return None
