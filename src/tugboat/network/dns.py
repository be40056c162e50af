"""The embedded DNS server (docker's 127.0.0.11) for containers on user-defined networks.

One thread in the daemon serves every container: for each container a UDP and a TCP socket are
opened *inside its network namespace* (``setns`` in a short-lived thread), bound to random
ports of 127.0.0.11 with an nft DNAT from 127.0.0.11:53 in that netns (as docker does, so the
container may bind :53 itself), and all of them are multiplexed by one selector loop. Because each
socket belongs to one container we know who asks, and so which networks' names it may see.
Names we own (container names, ``--network-alias`` aliases, short IDs, ``name.network``) are
answered directly; every other question is forwarded, from the host's namespace, to the host's
resolvers (``/etc/resolv.conf``, or the container's ``--dns``), on a small thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSRecord

from tugboat.network import kernel

log = logging.getLogger("tugboat.network.dns")

DNS_ADDRESS = "127.0.0.11"
TTL = 600

# resolve(container_id, name, qtype) -> list of answers (IPs, or names for PTR) when the name
# is ours, or None when the question must be forwarded.
Resolver = Callable[[str, str, str], "list[str] | None"]
Upstreams = Callable[[str], "list[tuple[str, int]]"]


def parse_upstream(text: str) -> tuple[str, int]:
    """"1.2.3.4" or "1.2.3.4:5353" -> (host, port)."""
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out


class EmbeddedDNS:
    def __init__(self, resolve: Resolver, upstreams: Upstreams, redirect: bool = True) -> None:
        self.redirect = redirect
        self._resolve = resolve
        self._upstreams = upstreams
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._socks: dict[str, list[socket.socket]] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tug-dns")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", ""))
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="tug-dns", daemon=True)
        self._thread.start()

    # registration ------------------------------------------------------------------------
    @staticmethod
    def open_sockets(redirect: bool = True) -> list[socket.socket]:
        """Listening sockets for 127.0.0.11:53 in the calling thread's netns (lo must be up).

        With ``redirect`` (docker's way) they are bound to random ports of 127.0.0.11 and an nft
        table of the netns (``ip tugboat-dns``) DNATs :53 to them, so that the container itself
        may still bind port 53; without it (or if nftables fails) they bind :53 directly."""
        if redirect:
            u, t = _bind_pair(0)
            try:
                _install_redirect(u.getsockname()[1], t.getsockname()[1])
                return [u, t]
            except Exception as exc:
                log.warning("embedded DNS: no DNAT in the container netns (%s); binding :53", exc)
                u.close()
                t.close()
        u, t = _bind_pair(53)
        return [u, t]

    def add(self, container_id: str, netns_path: str | None = None,
            socks: list[socket.socket] | None = None) -> None:
        """Serve ``container_id``: its sockets are given, or opened inside ``netns_path``."""
        if socks is None:
            if netns_path is None:
                raise ValueError("netns_path or socks required")
            socks = kernel.in_netns(netns_path, lambda: self.open_sockets(self.redirect))
        with self._lock:
            old = self._socks.pop(container_id, [])
            self._socks[container_id] = socks
            for s in old:
                self._unregister(s)
            for s in socks:
                kind = "udp" if s.type == socket.SOCK_DGRAM else "tcp"
                self._sel.register(s, selectors.EVENT_READ, (kind, container_id))
        self._wake()

    def has(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._socks

    def remove(self, container_id: str) -> None:
        with self._lock:
            for s in self._socks.pop(container_id, []):
                self._unregister(s)
        self._wake()

    def _unregister(self, s: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(s)
        s.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(timeout=2)
        with self._lock:
            for cid in list(self._socks):
                for s in self._socks.pop(cid):
                    self._unregister(s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    # serving -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            try:
                events = self._sel.select(timeout=1.0)
            except (OSError, ValueError):
                if self._stop:
                    return
                continue
            for key, _ in events:
                kind, cid = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if kind == "wake":
                    with contextlib.suppress(OSError):
                        sock.recv(4096)
                    continue
                try:
                    if kind == "udp":
                        data, addr = sock.recvfrom(4096)
                        reply = self._answer_local(cid, data)
                        if reply is not None:
                            sock.sendto(reply, addr)
                        else:
                            self._pool.submit(self._forward_udp, cid, sock, data, addr)
                    else:
                        conn, _ = sock.accept()
                        self._pool.submit(self._serve_tcp, cid, conn)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    log.debug("dns socket error for %s: %s", cid[:12], exc)

    def _answer_local(self, cid: str, data: bytes) -> bytes | None:
        """Our reply to ``data``, or None when it must be forwarded."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if not req.questions:
            return None
        q = req.questions[0]
        qname = str(q.qname).rstrip(".").lower()
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        # every other type of one of our names is answered NOERROR with no records
        lookup_type = "PTR" if qtype == "PTR" else "A"
        try:
            answers = self._resolve(cid, qname, lookup_type)
        except Exception:
            log.exception("embedded DNS lookup failed")
            answers = None
        if answers is None:
            return None
        reply = req.reply()
        reply.header.ra = 1
        if lookup_type == "PTR":
            for name in answers:
                reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(name + "."), ttl=TTL))
        elif qtype in ("A", "ANY"):
            for ip in answers:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        elif qtype == "AAAA":
            pass  # IPv4-only networks: the name exists, no AAAA (NOERROR, empty)
        return reply.pack()

    def _ask_upstream(self, cid: str, data: bytes, tcp: bool = False) -> bytes | None:
        for host, port in self._upstreams(cid):
            try:
                fam = socket.AF_INET6 if ":" in host else socket.AF_INET
                if tcp:
                    with socket.create_connection((host, port), timeout=3) as s:
                        s.sendall(struct.pack("!H", len(data)) + data)
                        n = struct.unpack("!H", _recv_exact(s, 2))[0]
                        return _recv_exact(s, n)
                with socket.socket(fam, socket.SOCK_DGRAM) as s:
                    s.settimeout(3)
                    s.connect((host, port))  # connected: an ICMP unreachable fails fast
                    s.send(data)
                    return s.recv(65535)
            except (OSError, struct.error):
                continue
        return None

    def _servfail(self, data: bytes) -> bytes | None:
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        reply = req.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()

    def _forward_udp(self, cid: str, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        resp = self._ask_upstream(cid, data) or self._servfail(data)
        if resp is not None:
            with contextlib.suppress(OSError):
                sock.sendto(resp, addr)

    def _serve_tcp(self, cid: str, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(5)
            try:
                while True:
                    head = _recv_exact(conn, 2)
                    if not head:
                        return
                    data = _recv_exact(conn, struct.unpack("!H", head)[0])
                    resp = self._answer_local(cid, data)
                    if resp is None:
                        resp = self._ask_upstream(cid, data, tcp=True) or self._servfail(data)
                    if resp is None:
                        return
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
            except (OSError, struct.error):
                return


def _bind_pair(port: int) -> tuple[socket.socket, socket.socket]:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        u.bind((DNS_ADDRESS, port))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((DNS_ADDRESS, port))
        t.listen(64)
    except OSError:
        u.close()
        t.close()
        raise
    u.setblocking(False)
    t.setblocking(False)
    return u, t


def redirect_script(udp_port: int, tcp_port: int) -> str:
    """The netns-local nft table sending 127.0.0.11:53 to the listeners' real ports."""
    return (
        "table ip tugboat-dns {}\ndelete table ip tugboat-dns\n"
        "table ip tugboat-dns {\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        f"    ip daddr {DNS_ADDRESS} udp dport 53 dnat to {DNS_ADDRESS}:{udp_port}\n"
        f"    ip daddr {DNS_ADDRESS} tcp dport 53 dnat to {DNS_ADDRESS}:{tcp_port}\n"
        "  }\n"
        "}\n"
    )


def _install_redirect(udp_port: int, tcp_port: int) -> None:
    # a libnftables context opens its netlink socket when created: make one in this netns
    from tugboat.network.nft import Nft

    n = Nft()
    try:
        n.run(redirect_script(udp_port, tcp_port))
    finally:
        _closer().submit(n.close)  # nft_ctx_free takes ~6 ms: not on the set-up path


_CLOSER: ThreadPoolExecutor | None = None


def wait_closed() -> None:
    """Wait for the background libnftables context frees (benchmarks, tests)."""
    if _CLOSER is not None:
        _CLOSER.submit(lambda: None).result()


def _closer() -> ThreadPoolExecutor:
    global _CLOSER
    if _CLOSER is None:
        _CLOSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tug-nft-free")
    return _CLOSER


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            if not buf:
                return b""
            raise OSError("short read")
        buf += chunk
    return buf

