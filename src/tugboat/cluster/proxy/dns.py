"""Cluster DNS: kube's DNS specification answered from a :class:`ServiceModel`, over UDP and TCP.

Names inside the cluster domain (default ``cluster.local``) are answered here, never forwarded:

- ``SVC.NS.svc.DOMAIN``  A: the ClusterIP; for a headless service the ready endpoints' IPs
  (all endpoints with ``publishNotReadyAddresses``); ExternalName: a CNAME.
- ``HOST.SVC.NS.svc.DOMAIN`` A: the headless endpoint with that ``hostname`` (or whose IP,
  dashed, is HOST: ``10-244-1-5``).
- ``_PORT._PROTO.SVC.NS.svc.DOMAIN`` SRV: for a ClusterIP service one record whose target is
  the service name; for a headless one a record per endpoint, targets ``HOST.SVC.NS.svc.DOMAIN``.
- ``A-B-C-D.NS.pod.DOMAIN`` A: A.B.C.D.
- ``D.C.B.A.in-addr.arpa`` PTR of a ClusterIP or of a headless endpoint.
Names that do not exist get NXDOMAIN with the zone's SOA, so the pod search path
(``NS.svc.DOMAIN svc.DOMAIN DOMAIN``, ndots:5 — see :func:`pod_resolv_conf`) costs one quick
local answer per suffix tried. Every other name is forwarded to the host's resolvers (or to
``$TUG_DNS_UPSTREAMS``, ``IP[:PORT],…``, when set).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Sequence

from dnslib import CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSRecord

from tugboat.cluster.proxy.model import EndpointInfo, ServiceModel
from tugboat.util.resolv import parse_resolv, read_host_resolv, render_resolv_conf

log = logging.getLogger("tugboat.cluster.proxy.dns")

TTL = 5
DEFAULT_DOMAIN = "cluster.local"


UPSTREAMS_ENV = "TUG_DNS_UPSTREAMS"


def _parse_upstreams(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in text.replace(" ", ",").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or "]" in port:
            host, port = item, "53"
        out.append((host.strip("[]"), int(port)))
    return out


def host_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """Where names outside the cluster domain go: ``$TUG_DNS_UPSTREAMS`` (``IP[:PORT],…``) if set,
    else the nameservers of the machine's resolv.conf."""
    env = os.environ.get(UPSTREAMS_ENV)
    if env is not None and env.strip():
        return _parse_upstreams(env)
    return [(ns, 53) for ns in parse_resolv(read_host_resolv(path))[0]]


def pod_resolv_conf(namespace: str, nameserver: str, domain: str = DEFAULT_DOMAIN,
                    extra_search: Sequence[str] = ()) -> str:
    """The /etc/resolv.conf of a pod with dnsPolicy ClusterFirst, as the kubelet writes it."""
    search = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *extra_search]
    return render_resolv_conf([nameserver], search, ["ndots:5"])


def _dashed(ip: str) -> str:
    return ip.replace(".", "-")


class ClusterDNS:
    def __init__(self, model: ServiceModel, *, domain: str = DEFAULT_DOMAIN,
                 upstreams: Sequence[tuple[str, int]] | None = None, forward_timeout: float = 2.0) -> None:
        self.model = model
        self.domain = domain.strip(".").lower()
        self.upstreams = list(upstreams) if upstreams is not None else host_upstreams()
        self.forward_timeout = forward_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self.address: tuple[str, int] | None = None
        self._pending: set[asyncio.Task] = set()

    # ---- answering
    def _soa(self) -> RR:
        return RR(self.domain + ".", QTYPE.SOA, ttl=TTL,
                  rdata=SOA(f"ns.dns.{self.domain}.", f"hostmaster.{self.domain}.",
                            (1, 7200, 1800, 86400, TTL)))

    def is_local(self, qname: str) -> bool:
        n = qname.rstrip(".").lower()
        return n == self.domain or n.endswith("." + self.domain) or n.endswith(".in-addr.arpa")

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """The reply to ``request``, or None when it must be forwarded."""
        q = request.q
        qname = str(q.qname).rstrip(".").lower()
        qtype = QTYPE[q.qtype]
        reply = request.reply()
        if qname.endswith(".in-addr.arpa"):
            target = self._ptr(qname)
            if target is None:
                return None
            if qtype in ("PTR", "ANY"):
                reply.add_answer(RR(str(q.qname), QTYPE.PTR, ttl=TTL, rdata=PTR(target)))
            return reply
        if not (qname == self.domain or qname.endswith("." + self.domain)):
            return None
        reply.header.aa = 1
        records = self._lookup(qname[: -len(self.domain)].rstrip("."), qtype)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa())
            return reply
        answers, additional = records
        for rr in answers:
            reply.add_answer(rr)
        for rr in additional:
            reply.add_ar(rr)
        if not answers:
            reply.add_auth(self._soa())
        return reply

    def _ptr(self, qname: str) -> str | None:
        parts = qname[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4:
            return None
        ip = ".".join(reversed(parts))
        svc = self.model.service_by_ip(ip)
        if svc is not None:
            return f"{svc.name}.{svc.namespace}.svc.{self.domain}."
        for s in self.model.services():
            if s.headless:
                for ep in self.model.endpoints(s.namespace, s.name, include_not_ready=s.publish_not_ready):
                    if ep.ip == ip and ep.hostname:
                        return f"{ep.hostname}.{s.name}.{s.namespace}.svc.{self.domain}."
        return None

    def _lookup(self, rel: str, qtype: str) -> tuple[list[RR], list[RR]] | None:
        """Records for ``rel`` (the name without the domain); None = the name does not exist."""
        labels = rel.split(".") if rel else []
        fq = ".".join([*labels, self.domain]) + "."
        if not labels:
            return [], []
        kind = labels[-1]
        if kind == "svc":
            return self._svc(labels[:-1], fq, qtype)
        if kind == "pod":
            if len(labels) == 1:
                return [], []
            if len(labels) == 2:
                return [], []
            if len(labels) != 3:
                return None
            ip = labels[0].replace("-", ".")
            parts = ip.split(".")
            if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
                return None
            return ([RR(fq, QTYPE.A, ttl=TTL, rdata=A(ip))] if qtype in ("A", "ANY") else []), []
        return None

    def _endpoints(self, ns: str, name: str, publish_not_ready: bool) -> list[EndpointInfo]:
        return self.model.endpoints(ns, name, include_not_ready=publish_not_ready)

    def _svc(self, labels: list[str], fq: str, qtype: str) -> tuple[list[RR], list[RR]] | None:
        if not labels:
            return [], []
        if len(labels) == 1:  # NS.svc.DOMAIN: exists when the namespace has services
            return ([], []) if self.model.has_namespace(labels[0]) else None
        ns, name = labels[-1], labels[-2]
        svc = self.model.service(ns, name)
        if svc is None:
            return None
        svc_fq = f"{name}.{ns}.svc.{self.domain}."
        rest = labels[:-2]
        eps = self._endpoints(ns, name, svc.publish_not_ready) if svc.headless else []
        if not rest:
            if svc.type == "ExternalName" and svc.external_name:
                return [RR(fq, QTYPE.CNAME, ttl=TTL, rdata=CNAME(svc.external_name.rstrip(".") + "."))], []
            ips = [svc.cluster_ip] if svc.cluster_ip else [ep.ip for ep in eps]
            if qtype in ("A", "ANY"):
                return [RR(fq, QTYPE.A, ttl=TTL, rdata=A(ip)) for ip in ips], []
            if qtype == "SRV":
                return self._srv_all(svc_fq, svc, eps)
            return [], []
        if len(rest) == 1:  # HOST.SVC.NS (headless endpoint)
            host = rest[0]
            for ep in eps:
                if (ep.hostname and ep.hostname.lower() == host) or _dashed(ep.ip) == host:
                    return ([RR(fq, QTYPE.A, ttl=TTL, rdata=A(ep.ip))] if qtype in ("A", "ANY") else []), []
            return None
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            pname, proto = rest[0][1:], rest[1][1:].upper()
            port = next((p for p in svc.ports if p.name.lower() == pname and p.protocol == proto), None)
            if port is None:
                return None
            if qtype not in ("SRV", "ANY"):
                return [], []
            if not svc.headless:
                add = [RR(svc_fq, QTYPE.A, ttl=TTL, rdata=A(svc.cluster_ip))] if svc.cluster_ip else []
                return [RR(fq, QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, port.port, svc_fq))], add
            ans, add = [], []
            for ep in eps:
                num = ep.port_for(port.name, port.protocol)
                if num is None:
                    continue
                target = f"{ep.hostname or _dashed(ep.ip)}.{svc_fq}"
                ans.append(RR(fq, QTYPE.SRV, ttl=TTL, rdata=SRV(0, max(1, 100 // max(1, len(eps))), num, target)))
                add.append(RR(target, QTYPE.A, ttl=TTL, rdata=A(ep.ip)))
            return ans, add
        return None

    def _srv_all(self, svc_fq: str, svc, eps: list[EndpointInfo]) -> tuple[list[RR], list[RR]]:
        ans, add = [], []
        if not svc.headless:
            for p in svc.ports:
                ans.append(RR(svc_fq, QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, p.port, svc_fq)))
            if svc.cluster_ip and ans:
                add.append(RR(svc_fq, QTYPE.A, ttl=TTL, rdata=A(svc.cluster_ip)))
            return ans, add
        for ep in eps:
            target = f"{ep.hostname or _dashed(ep.ip)}.{svc_fq}"
            for _n, _proto, num in ep.ports:
                ans.append(RR(svc_fq, QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, num, target)))
            add.append(RR(target, QTYPE.A, ttl=TTL, rdata=A(ep.ip)))
        return ans, add

    # ---- forwarding
    async def forward(self, data: bytes, tcp: bool = False) -> bytes | None:
        for host, port in self.upstreams:
            if self.address and (host, port) == self.address:
                continue
            try:
                if tcp:
                    return await asyncio.wait_for(_tcp_query(host, port, data), self.forward_timeout)
                reply = await asyncio.wait_for(_udp_query(host, port, data), self.forward_timeout)
                return reply
            except (TimeoutError, OSError, EOFError) as e:
                log.debug("upstream %s:%s failed: %s", host, port, e)
        return None

    async def handle(self, data: bytes, tcp: bool = False) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        if not request.questions:
            return None
        try:
            reply = self.answer(request)
        except Exception:
            log.exception("answering %s", request.q.qname)
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
        if reply is not None:
            out = reply.pack()
            if not tcp and len(out) > 512:
                reply = request.reply()
                reply.header.tc = 1
                out = reply.pack()
            return out
        fwd = await self.forward(data, tcp)
        if fwd is None:
            r = request.reply()
            r.header.rcode = RCODE.SERVFAIL
            return r.pack()
        return fwd

    # ---- serving
    async def start(self, host: str = "127.0.0.1", port: int = 53) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        dns = self

        class _Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport  # type: ignore[assignment]

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                t = loop.create_task(self._reply(data, addr))
                dns._pending.add(t)
                t.add_done_callback(dns._pending.discard)

            async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
                out = await dns.handle(data)
                if out is not None and not self.transport.is_closing():  # type: ignore[attr-defined]
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(_Udp, local_addr=(host, port))
        self._udp = transport  # type: ignore[assignment]
        bound = transport.get_extra_info("sockname")
        self.address = (bound[0], bound[1])
        self._tcp = await asyncio.start_server(self._serve_tcp, host, bound[1])
        log.info("cluster DNS on %s:%s (udp+tcp)", *self.address)
        return self.address

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                hdr = await asyncio.wait_for(reader.readexactly(2), 30)
                data = await reader.readexactly(struct.unpack("!H", hdr)[0])
                out = await self.handle(data, tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


async def _udp_query(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    class _P(asyncio.DatagramProtocol):
        def datagram_received(self, d: bytes, addr: tuple[str, int]) -> None:
            if not fut.done():
                fut.set_result(d)

        def error_received(self, exc: Exception) -> None:
            if not fut.done():
                fut.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(_P, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await fut
    finally:
        transport.close()


async def _tcp_query(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        n = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(n)
    finally:
        writer.close()


__all__ = ["ClusterDNS", "host_upstreams", "pod_resolv_conf"]
