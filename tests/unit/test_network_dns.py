"""The embedded DNS server over real sockets on 127.0.0.1 (no root): local answers, forwarding."""

from __future__ import annotations

import socket
import struct
import threading

from dnslib import QTYPE, RR, A, DNSRecord

from tugboat.network.dns import EmbeddedDNS, parse_upstream


def _upstream() -> tuple[socket.socket, threading.Event]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            req = DNSRecord.parse(data)
            reply = req.reply()
            if str(req.q.qname) == "far.example.":
                reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("198.18.1.1"), ttl=5))
            s.sendto(reply.pack(), addr)

    threading.Thread(target=serve, daemon=True).start()
    return s, stop


def _ask_udp(port: int, name: str, qtype: str = "A") -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(DNSRecord.question(name, qtype).pack(), ("127.0.0.1", port))
        return DNSRecord.parse(c.recvfrom(65535)[0])


def test_local_names_answered_others_forwarded() -> None:
    up, stop = _upstream()
    asked: list[tuple[str, str, str]] = []

    def resolve(cid: str, name: str, qtype: str) -> list[str] | None:
        asked.append((cid, name, qtype))
        if qtype == "PTR" and name == "2.0.18.172.in-addr.arpa":
            return ["web.front"]
        return ["172.18.0.2"] if name == "web" else None

    dns = EmbeddedDNS(resolve, lambda cid: [parse_upstream(f"127.0.0.1:{up.getsockname()[1]}")])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    t.listen()
    uport, tport = u.getsockname()[1], t.getsockname()[1]
    u.setblocking(False)
    t.setblocking(False)
    try:
        dns.add("c1", socks=[u, t])
        r = _ask_udp(uport, "web")
        assert [str(a.rdata) for a in r.rr] == ["172.18.0.2"]
        assert asked[-1] == ("c1", "web", "A")
        r6 = _ask_udp(uport, "web", "AAAA")
        assert r6.header.rcode == 0 and not r6.rr
        ptr = _ask_udp(uport, "2.0.18.172.in-addr.arpa", "PTR")
        assert str(ptr.rr[0].rdata) == "web.front."
        far = _ask_udp(uport, "far.example")
        assert [str(a.rdata) for a in far.rr] == ["198.18.1.1"]
        # TCP: length-prefixed
        with socket.create_connection(("127.0.0.1", tport), timeout=5) as c:
            q = DNSRecord.question("web").pack()
            c.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", c.recv(2))[0]
            data = b""
            while len(data) < n:
                data += c.recv(n - len(data))
            assert str(DNSRecord.parse(data).rr[0].rdata) == "172.18.0.2"
        dns.remove("c1")
        assert not dns.has("c1")
    finally:
        dns.close()
        stop.set()
        up.close()


def test_servfail_when_no_upstream_answers() -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound, never answers -> we time out... use a closed port instead
    port = dead.getsockname()[1]
    dead.close()
    dns = EmbeddedDNS(lambda *a: None, lambda cid: [("127.0.0.1", port)])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.setblocking(False)
    try:
        dns.add("c", socks=[u])
        r = _ask_udp(u.getsockname()[1], "nowhere.example")
        assert r.header.rcode == 2  # SERVFAIL
    finally:
        dns.close()


def test_redirect_script_replaces_its_table() -> None:
    from tugboat.network.dns import redirect_script

    text = redirect_script(40001, 40002)
    assert text.startswith("table ip tugboat-dns {}\ndelete table ip tugboat-dns\n")
    assert "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40001" in text
    assert "ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40002" in text
