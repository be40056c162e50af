"""The service proxy: Services + EndpointSlices -> one nftables table of our own (``ip tugboat-svc``).

Layout of the generated table (all in one ``nft -f -`` transaction, so a change is atomic)::

    chain nat-prerouting / nat-output   (nat hooks, priority dstnat)  -> jump services
    chain services
        ip daddr . meta l4proto . th dport vmap @service-ips          ClusterIP VIPs
        fib daddr type local meta l4proto . th dport vmap @service-nodeports   NodePorts
    chain svc-…        one per (service, port): affinity lookups, then
                       numgen random mod N vmap { 0 : goto ep-…, … }  (equal-probability balancing)
    chain ep-…         one per (service port, endpoint): hairpin mark, affinity update, dnat
    chain nat-postrouting  (srcnat)  packets marked 0x4000 are masqueraded
    chain filter-*     (filter hooks) VIPs/NodePorts without ready endpoints are rejected (TCP reset,
                       else icmp port-unreachable)
    set aff-…          per endpoint, source IPs with a timeout (sessionAffinity: ClientIP)

Headless and ExternalName services get no rules. The proxy re-renders on every model change
(coalesced for ``min_interval``) and applies only when the text differs from the last one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import subprocess
from collections.abc import Sequence

from tugboat.cluster.proxy.model import EndpointInfo, ServiceModel, ServicePort
from tugboat.errors import TugError

log = logging.getLogger("tugboat.cluster.proxy")

TABLE = "tugboat-svc"
MASQ_MARK = 0x4000


def _ident(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]
    tail = re.sub(r"[^a-zA-Z0-9_-]", "-", "-".join(parts))[:40]
    return f"{h}-{tail}"


def _proto(p: str) -> str:
    return p.lower()


def endpoint_port(svc_port: ServicePort, ep: EndpointInfo) -> int | None:
    """The port traffic for ``svc_port`` goes to on ``ep`` (named targetPorts resolved by the slice)."""
    num = ep.port_for(svc_port.name, svc_port.protocol)
    if num is not None:
        return num
    if isinstance(svc_port.target_port, int):
        return svc_port.target_port
    if isinstance(svc_port.target_port, str) and svc_port.target_port.isdigit():
        return int(svc_port.target_port)
    return None


def render_ruleset(model: ServiceModel, *, table: str = TABLE, cluster_cidr: str | None = None) -> str:
    """The full nft script (delete + recreate of ``table``) for the model's current state."""
    vips: list[str] = []
    nodeports: list[str] = []
    noep: list[str] = []
    noep_np: list[str] = []
    chains: list[str] = []
    sets: list[str] = []
    for svc in sorted(model.services(), key=lambda s: s.key):
        if svc.headless or svc.type == "ExternalName" or not svc.cluster_ip:
            continue
        eps = model.endpoints(svc.namespace, svc.name)
        for sp in svc.ports:
            if sp.protocol not in ("TCP", "UDP", "SCTP"):
                continue
            proto = _proto(sp.protocol)
            sid = _ident(svc.namespace, svc.name, sp.name or str(sp.port), proto)
            targets = [(ep, endpoint_port(sp, ep)) for ep in eps]
            targets = [(ep, port) for ep, port in targets if port is not None]
            if not targets:
                noep.append(f"{svc.cluster_ip} . {proto} . {sp.port}")
                if sp.node_port and svc.type in ("NodePort", "LoadBalancer"):
                    noep_np.append(f"{proto} . {sp.node_port}")
                continue
            vips.append(f"{svc.cluster_ip} . {proto} . {sp.port} : goto svc-{sid}")
            if sp.node_port and svc.type in ("NodePort", "LoadBalancer"):
                nodeports.append(f"{proto} . {sp.node_port} : goto np-{sid}")
                chains.append(f"  chain np-{sid} {{\n    meta mark set meta mark | {MASQ_MARK:#x}\n"
                              f"    goto svc-{sid}\n  }}")
            body: list[str] = []
            if cluster_cidr:
                body.append(f"    ip saddr != {cluster_cidr} meta mark set meta mark | {MASQ_MARK:#x}")
            ep_chains: list[str] = []
            for ep, port in targets:
                eid = _ident(sid, ep.ip)
                lines = [f"    ip saddr {ep.ip} meta mark set meta mark | {MASQ_MARK:#x}"]
                if svc.session_affinity:
                    sets.append(f"  set aff-{eid} {{\n    type ipv4_addr\n    flags dynamic,timeout\n"
                                f"    timeout {svc.affinity_timeout}s\n  }}")
                    body.append(f"    ip saddr @aff-{eid} goto ep-{eid}")
                    lines.append(f"    update @aff-{eid} {{ ip saddr timeout {svc.affinity_timeout}s }}")
                lines.append(f"    meta l4proto {proto} dnat to {ep.ip}:{port}")
                chains.append(f"  chain ep-{eid} {{\n" + "\n".join(lines) + "\n  }")
                ep_chains.append(f"ep-{eid}")
            if len(ep_chains) == 1:
                body.append(f"    goto {ep_chains[0]}")
            else:
                vm = ", ".join(f"{i} : goto {c}" for i, c in enumerate(ep_chains))
                body.append(f"    numgen random mod {len(ep_chains)} vmap {{ {vm} }}")
            chains.append(f"  chain svc-{sid} {{\n" + "\n".join(body) + "\n  }")

    def elements(items: Sequence[str]) -> str:
        return f"    elements = {{ {', '.join(items)} }}\n" if items else ""

    out = [
        f"table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n"
        + elements(vips) + "  }",
        "  map service-nodeports {\n    type inet_proto . inet_service : verdict\n" + elements(nodeports) + "  }",
        "  set no-endpoint-services {\n    type ipv4_addr . inet_proto . inet_service\n" + elements(noep) + "  }",
        *sets,
        "  set no-endpoint-nodeports {\n    type inet_proto . inet_service\n" + elements(noep_np) + "  }",
        "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }",
        "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }",
        "  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} meta mark set meta mark ^ {MASQ_MARK:#x} masquerade\n  }}",
        "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n"
        "    fib daddr type local meta l4proto . th dport vmap @service-nodeports\n  }",
        "  chain noep-check {\n    ip daddr . meta l4proto . th dport @no-endpoint-services"
        " meta l4proto tcp reject with tcp reset\n"
        "    ip daddr . meta l4proto . th dport @no-endpoint-services reject\n"
        "    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports meta l4proto tcp"
        " reject with tcp reset\n"
        "    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject\n  }",
        "  chain filter-input {\n    type filter hook input priority filter - 1; policy accept;\n"
        "    ct state new jump noep-check\n  }",
        "  chain filter-forward {\n    type filter hook forward priority filter - 1; policy accept;\n"
        "    ct state new jump noep-check\n  }",
        "  chain filter-output {\n    type filter hook output priority filter - 1; policy accept;\n"
        "    ct state new jump noep-check\n  }",
        *chains,
        "}",
    ]
    return "\n".join(out) + "\n"


def nft_apply(script: str, netns: str | None = None) -> None:
    cmd = ["nft", "-f", "-"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    r = subprocess.run(cmd, input=script.encode(), capture_output=True)
    if r.returncode != 0:
        raise TugError(f"nft failed: {r.stderr.decode(errors='replace').strip()}")


def nft_delete_table(table: str = TABLE, netns: str | None = None) -> None:
    cmd = ["nft", "delete", "table", "ip", table]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    subprocess.run(cmd, capture_output=True)


class ServiceProxy:
    """Keeps ``table`` in step with a :class:`ServiceModel` (call :meth:`run` as a task)."""

    def __init__(self, model: ServiceModel, *, table: str = TABLE, cluster_cidr: str | None = None,
                 netns: str | None = None, min_interval: float = 0.05) -> None:
        self.model = model
        self.table = table
        self.cluster_cidr = cluster_cidr
        self.netns = netns
        self.min_interval = min_interval
        self._dirty = asyncio.Event()
        self._last: str | None = None
        self.syncs = 0
        self.synced_generation = -1
        model.subscribe(self._dirty.set)
        self._dirty.set()

    def sync_once(self) -> bool:
        gen = self.model.generation
        script = render_ruleset(self.model, table=self.table, cluster_cidr=self.cluster_cidr)
        changed = script != self._last
        if changed:
            nft_apply(script, self.netns)
            self._last = script
            self.syncs += 1
        self.synced_generation = gen
        return changed

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._dirty.wait()
                await asyncio.sleep(self.min_interval)
                self._dirty.clear()
                try:
                    await loop.run_in_executor(None, self.sync_once)
                except TugError as e:
                    log.error("service proxy sync failed: %s", e)
                    await asyncio.sleep(1)
                    self._dirty.set()
        finally:
            pass

    def cleanup(self) -> None:
        nft_delete_table(self.table, self.netns)
