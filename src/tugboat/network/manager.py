"""NetworkManager: networks, container endpoints, published ports, embedded DNS.

The one entry point of the network area (the engine's ``engine.network``). Synchronous and
thread-safe (one lock); the daemon calls it from an executor. See :mod:`tugboat.network.models`
for the on-disk layout, :mod:`tugboat.network.nft` for the firewall rules, and
:mod:`tugboat.network.dns` for the embedded DNS server.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import ipaddress
import logging
import os
import re
import socket
import threading
from typing import Any

import msgspec

from tugboat.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, TugError
from tugboat.network import files, ipam, kernel, nft, ports
from tugboat.network.models import (
    ContainerNetworkInfo,
    ContainerNetworkSpec,
    ContainerRecord,
    Endpoint,
    HostState,
    NetworkRecord,
    PortMapping,
)
from tugboat.util.fs import write_atomic
from tugboat.util.resolv import read_host_resolv

log = logging.getLogger("tugboat.network")

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
PREDEFINED = ("bridge", "host", "none")
BRIDGE_NAME_OPT = "com.docker.network.bridge.name"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z")


class NetworkManager:
    """Networks and container endpoints of one tugboat data root.

    ``instance`` (or ``$TUG_NETWORK_INSTANCE``) names a separate set of kernel objects, so that
    several managers (tests) can run on one host: the default bridge becomes ``tug-<instance>``
    and the nft tables ``tugboat-<instance>``/``tugboat-nat-<instance>``.
    ``dns_upstreams`` overrides the host resolvers the embedded DNS forwards to ("ip[:port]").
    """

    def __init__(self, root: str, *, instance: str | None = None, bridge_name: str | None = None,
                 default_subnet: str | None = None, dns_upstreams: list[str] | None = None,
                 fsync: bool = True, dns_redirect: bool = True) -> None:
        self.root = root
        self.dir = os.path.join(root, "network")
        self.instance = instance if instance is not None else os.environ.get("TUG_NETWORK_INSTANCE", "")
        if bridge_name:
            self.bridge_name = bridge_name
        else:
            self.bridge_name = f"tug-{self.instance}"[:15] if self.instance else "tug0"
        self.default_subnet = default_subnet
        self.dns_upstreams = dns_upstreams
        self.fsync = fsync
        self.dns_redirect = dns_redirect
        self.netns_dir = os.path.join(self.dir, "netns")
        self._lock = threading.RLock()
        self._networks: dict[str, NetworkRecord] = {}
        self._containers: dict[str, ContainerRecord] = {}
        self._pools: dict[str, ipam.Pool] = {}
        self._held: dict[str, list[socket.socket]] = {}  # container id -> held port sockets
        self._ipr: Any = None
        self._bridge_index: dict[str, int] = {}
        self._reaper: Any = None
        self._reaping: dict[tuple[str, str], str] = {}  # (network id, ip) -> host veth being deleted
        self._reaper_ipr: Any = None
        self._nft: nft.Nft | None = None
        self._dns: Any = None
        self._started = False
        self._host_state = HostState()
        for sub in ("networks", "containers", "netns"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self._load()

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        ndir = os.path.join(self.dir, "networks")
        for fn in sorted(os.listdir(ndir)):
            if fn.endswith(".json"):
                with open(os.path.join(ndir, fn), "rb") as f:
                    rec = msgspec.json.decode(f.read(), type=NetworkRecord)
                self._networks[rec.id] = rec
                self._pools[rec.id] = ipam.Pool(rec.subnet, rec.gateway, rec.ip_range)
        cdir = os.path.join(self.dir, "containers")
        for fn in sorted(os.listdir(cdir)):
            if fn.endswith(".json"):
                with open(os.path.join(cdir, fn), "rb") as f:
                    crec = msgspec.json.decode(f.read(), type=ContainerRecord)
                self._containers[crec.container_id] = crec
                for ep in crec.endpoints:
                    pool = self._pools.get(ep.network_id)
                    if pool is not None:
                        pool.mark(ep.ip)
        spath = os.path.join(self.dir, "state.json")
        if os.path.exists(spath):
            with open(spath, "rb") as f:
                self._host_state = msgspec.json.decode(f.read(), type=HostState)

    def _write(self, path: str, obj: Any) -> None:
        data = msgspec.json.encode(obj)
        if self.fsync:
            write_atomic(path, data, mode=0o600)
        else:
            write_atomic(path, data, sync=False)

    def _save_network(self, rec: NetworkRecord) -> None:
        self._write(os.path.join(self.dir, "networks", rec.id + ".json"), rec)

    def _save_container(self, rec: ContainerRecord) -> None:
        self._write(os.path.join(self.dir, "containers", rec.container_id + ".json"), rec)

    def _drop_container_file(self, cid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, "containers", cid + ".json"))

    def _save_state(self) -> None:
        self._write(os.path.join(self.dir, "state.json"), self._host_state)

    # ------------------------------------------------------------------ kernel handles
    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            self._ipr = kernel.iproute()
        return self._ipr

    @property
    def nft(self) -> nft.Nft:
        if self._nft is None:
            self._nft = nft.Nft()
        return self._nft

    def _dns_server(self) -> Any:
        if self._dns is None:
            from tugboat.network.dns import EmbeddedDNS

            self._dns = EmbeddedDNS(self._dns_resolve, self._dns_upstreams_for, redirect=self.dns_redirect)
        return self._dns

    # ------------------------------------------------------------------ lifecycle
    def restore(self) -> None:
        """Bring the kernel in line with the records (daemon start); idempotent."""
        with self._lock:
            self._ensure_default()
            for rec in self._networks.values():
                self._ensure_bridge(rec)
            self._ensure_forwarding()
            gone = []
            for cid, crec in self._containers.items():
                if crec.shared_from or crec.netns_path is None:
                    continue
                if not (os.path.exists(crec.netns_path) and kernel.is_netns_mount(crec.netns_path)):
                    gone.append(cid)
                    continue
                for ep in crec.endpoints:  # re-attach veths whose bridge was re-created
                    net = self._networks.get(ep.network_id)
                    idx = kernel.link_index(self.ipr, ep.host_veth)
                    if net is not None and idx is not None:
                        br = kernel.link_index(self.ipr, net.bridge)
                        with contextlib.suppress(Exception):
                            self.ipr.link("set", index=idx, master=br, state="up")
                            kernel.set_hairpin(ep.host_veth)
                if cid not in self._held:
                    held: list[socket.socket] = []
                    for pm in crec.ports:
                        with contextlib.suppress(TugError, OSError):
                            held.append(ports.hold(pm.proto, pm.host_ip, pm.host_port))
                    self._held[cid] = held
                if self._wants_dns(crec) and (self._dns is None or not self._dns.has(cid)):
                    with contextlib.suppress(OSError):
                        self._dns_server().add(cid, crec.netns_path)
            for cid in gone:
                log.info("network: container %s has no netns any more; dropping its endpoints", cid[:12])
                self._forget_container(cid)
            # netns mounts nobody records (a crash between mount and record): remove them
            for name in os.listdir(self.netns_dir):
                if name not in self._containers and not name.startswith("."):
                    with contextlib.suppress(OSError):
                        kernel.remove_netns(os.path.join(self.netns_dir, name))
            self._apply_rules()
            self._started = True

    def _ensure_started(self) -> None:
        if not self._started:
            self.restore()

    def shutdown(self, remove_all: bool = False) -> None:
        """Stop serving. ``remove_all``: also tear down every endpoint, bridge, nft table of
        ours and put ip_forward back to what it was (records of networks stay on disk)."""
        with self._lock:
            dns, self._dns = self._dns, None
        if dns is not None:
            dns.close()  # outside the lock: its thread may be waiting for it in a lookup
        with self._lock:
            for cid in list(self._held):
                ports.release(self._held.pop(cid))
            if remove_all:
                for cid in list(self._containers):
                    with contextlib.suppress(Exception):
                        self.teardown_container(cid)
        self._stop_reaper()  # with the lock free: the reaper takes it to release addresses
        with self._lock:
            if remove_all:
                for rec in self._networks.values():
                    if rec.bridge:
                        with contextlib.suppress(Exception):
                            kernel.delete_link(self.ipr, rec.bridge)
                self._bridge_index.clear()
                with contextlib.suppress(TugError):
                    self.nft.run(nft.render_delete(self.instance))
                self._restore_forwarding()
            if self._ipr is not None:
                with contextlib.suppress(Exception):
                    self._ipr.close()
                self._ipr = None
            self._started = False

    def _stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.shutdown(wait=True)
            self._reaper = None
        if self._reaper_ipr is not None:
            with contextlib.suppress(Exception):
                self._reaper_ipr.close()
            self._reaper_ipr = None

    def _ensure_forwarding(self) -> None:
        cur = kernel.read_sysctl("net.ipv4.ip_forward")
        if cur != "1":
            if self._host_state.ip_forward_prior is None:
                self._host_state.ip_forward_prior = cur or "0"
                self._save_state()
            kernel.write_sysctl("net.ipv4.ip_forward", "1")
        elif self._host_state.ip_forward_prior is None:
            self._host_state.ip_forward_prior = "1"
            self._save_state()

    def _restore_forwarding(self) -> None:
        prior = self._host_state.ip_forward_prior
        if prior is not None and prior != "1":
            with contextlib.suppress(TugError):
                kernel.write_sysctl("net.ipv4.ip_forward", prior)
        self._host_state.ip_forward_prior = None
        self._save_state()

    # ------------------------------------------------------------------ networks
    def _ensure_default(self) -> None:
        if any(n.default for n in self._networks.values()):
            return
        if self.default_subnet:
            subnet, gw, _ = ipam.plan_network(self.default_subnet, None, None)
        else:
            taken = [n.subnet for n in self._networks.values()] + self._host_route_nets(self.bridge_name)
            subnet = ipam.pick_subnet(taken, (ipaddress.IPv4Network(c) for c in ipam.DEFAULT_BRIDGE_CANDIDATES))
            subnet, gw, _ = ipam.plan_network(subnet, None, None)
        rec = NetworkRecord(
            id=hashlib.sha256(f"tugboat-bridge-{self.instance}-{os.urandom(8).hex()}".encode()).hexdigest(),
            name="bridge", bridge=self.bridge_name, subnet=subnet, gateway=gw, created=_now(),
            default=True,
            options={
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                BRIDGE_NAME_OPT: self.bridge_name,
                "com.docker.network.driver.mtu": "1500",
            },
        )
        self._networks[rec.id] = rec
        self._pools[rec.id] = ipam.Pool(rec.subnet, rec.gateway)
        self._save_network(rec)

    def _host_route_nets(self, exclude_ifname: str = "") -> list[str]:
        out = []
        ours = {n.bridge for n in self._networks.values()}
        for dst, plen, oif in kernel.host_routes(self.ipr):
            if oif == exclude_ifname or oif in ours:
                continue
            with contextlib.suppress(ValueError):
                out.append(str(ipaddress.IPv4Network(f"{dst}/{plen}", strict=False)))
        return out

    def _ensure_bridge(self, rec: NetworkRecord) -> None:
        plen = ipaddress.IPv4Network(rec.subnet).prefixlen
        self._bridge_index[rec.bridge] = kernel.ensure_bridge(self.ipr, rec.bridge, rec.gateway, plen)
        # host -> 127.0.0.1:published port is DNATed to a container: let such packets leave
        kernel.set_iface_sysctl(rec.bridge, "route_localnet", "1")

    def _apply_rules(self) -> None:
        rs = nft.Ruleset()
        for rec in sorted(self._networks.values(), key=lambda r: r.bridge):  # deterministic text
            rs.bridges.append(nft.BridgeRules(
                rec.bridge, rec.subnet, rec.internal,
                icc=_opt_bool(rec.options.get("com.docker.network.bridge.enable_icc"), True),
                masquerade=_opt_bool(rec.options.get("com.docker.network.bridge.enable_ip_masquerade"), True)))
        for crec in sorted(self._containers.values(), key=lambda c: c.container_id):
            target = self._port_target(crec)
            if target is None:
                continue
            for pm in crec.ports:
                rs.ports.append(nft.PortRule(pm.proto, pm.host_ip, pm.host_port, target, pm.container_port))
        self.nft.run(nft.render(rs, self.instance))

    def _port_target(self, crec: ContainerRecord) -> str | None:
        """The container address published ports lead to: its first non-internal endpoint."""
        for ep in crec.endpoints:
            net = self._networks.get(ep.network_id)
            if net is not None and not net.internal:
                return ep.ip
        return None

    def _find_network(self, name_or_id: str) -> NetworkRecord:
        if not name_or_id:
            raise NotFound("network  not found")
        for rec in self._networks.values():
            if rec.id == name_or_id or rec.name == name_or_id:
                return rec
        matches = [r for r in self._networks.values() if r.id.startswith(name_or_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {name_or_id} is ambiguous ({len(matches)} matches found based on ID prefix)")
        raise NotFound(f"network {name_or_id} not found")

    def _pseudo(self, name: str) -> dict[str, Any]:
        pid = hashlib.sha256(f"tugboat-{name}-{self.root}".encode()).hexdigest()
        return {
            "Name": name, "Id": pid, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": "host" if name == "host" else "null", "EnableIPv4": True, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": None},
            "Internal": False, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": self._pseudo_containers(name), "Options": {}, "Labels": {},
        }

    def _pseudo_containers(self, mode: str) -> dict[str, Any]:
        out = {}
        for c in self._containers.values():
            if c.mode == mode:
                out[c.container_id] = {"Name": c.name, "EndpointID": "", "MacAddress": "",
                                       "IPv4Address": "", "IPv6Address": ""}
        return out

    def _net_json(self, rec: NetworkRecord) -> dict[str, Any]:
        plen = ipaddress.IPv4Network(rec.subnet).prefixlen
        conts: dict[str, Any] = {}
        for c in self._containers.values():
            for ep in c.endpoints:
                if ep.network_id == rec.id:
                    conts[c.container_id] = {
                        "Name": c.name, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
                        "IPv4Address": f"{ep.ip}/{plen}", "IPv6Address": "",
                    }
        cfg: dict[str, Any] = {"Subnet": rec.subnet, "Gateway": rec.gateway}
        if rec.ip_range:
            cfg["IPRange"] = rec.ip_range
        return {
            "Name": rec.name, "Id": rec.id, "Created": rec.created, "Scope": "local",
            "Driver": rec.driver, "EnableIPv4": True, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {} if not rec.default else None, "Config": [cfg]},
            "Internal": rec.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": conts,
            "Options": dict(rec.options), "Labels": dict(rec.labels),
        }

    def create(self, name: str, *, subnet: str | None = None, gateway: str | None = None,
               ip_range: str | None = None, internal: bool = False, labels: dict[str, str] | None = None,
               driver: str = "bridge", options: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a user-defined bridge network; returns its inspect JSON."""
        if not name or not NAME_RE.match(name):
            raise InvalidArgument(f"invalid network name {name!r}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        driver = driver or "bridge"
        if driver != "bridge":
            if driver in ("host", "null"):
                raise PermissionDenied(f"only one instance of \"{driver}\" network is allowed")
            raise NotFound(f"plugin \"{driver}\" not found")
        with self._lock:
            self._ensure_started()
            if name in PREDEFINED or any(r.name == name for r in self._networks.values()):
                raise Conflict(f"network with name {name} already exists")
            options = dict(options or {})
            if subnet:
                subnet, gw, rng = ipam.plan_network(subnet, gateway, ip_range)
                ipam.check_overlap(subnet, [(r.subnet, r.name) for r in self._networks.values()])
                # a bridge route over the host's own networks would cut the host off
                ipam.check_overlap(subnet, [(n, "a host route") for n in self._host_route_nets()])
            else:
                if gateway or ip_range:
                    raise InvalidArgument("--gateway and --ip-range need --subnet")
                taken = [r.subnet for r in self._networks.values()] + self._host_route_nets()
                subnet, gw, rng = ipam.plan_network(ipam.pick_subnet(taken), None, None)
            nid = os.urandom(32).hex()
            mtu_opt = options.get("com.docker.network.driver.mtu")
            if mtu_opt is not None and not (mtu_opt.isdigit() and 68 <= int(mtu_opt) <= 65535):
                raise InvalidArgument(f"invalid MTU {mtu_opt!r}: must be a number from 68 to 65535")
            bridge = options.get(BRIDGE_NAME_OPT) or f"br-{nid[:12]}"
            if len(bridge) > 15:
                raise InvalidArgument(f"invalid bridge name {bridge!r}: at most 15 characters")
            if any(r.bridge == bridge for r in self._networks.values()):
                raise Conflict(f"bridge name {bridge} is already used by another network")
            rec = NetworkRecord(id=nid, name=name, bridge=bridge, subnet=subnet, gateway=gw,
                                ip_range=rng, internal=internal, labels=dict(labels or {}),
                                options=options, created=_now(), ipam_config_given=bool(subnet))
            self._networks[nid] = rec
            self._pools[nid] = ipam.Pool(subnet, gw, rng)
            try:
                self._ensure_bridge(rec)
                self._ensure_forwarding()
                self._apply_rules()
                self._save_network(rec)
            except BaseException:
                self._networks.pop(nid, None)
                self._pools.pop(nid, None)
                with contextlib.suppress(Exception):
                    kernel.delete_link(self.ipr, bridge)
                with contextlib.suppress(Exception):
                    self._apply_rules()
                raise
            return self._net_json(rec)

    def inspect(self, name_or_id: str) -> dict[str, Any]:
        with self._lock:
            if name_or_id in ("host", "none"):
                return self._pseudo(name_or_id)
            for p in ("host", "none"):
                if len(name_or_id) >= 3 and self._pseudo(p)["Id"].startswith(name_or_id):
                    return self._pseudo(p)
            if not any(r.default for r in self._networks.values()) and name_or_id == "bridge":
                self._ensure_started()
            return self._net_json(self._find_network(name_or_id))

    def list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if not any(r.default for r in self._networks.values()):
                self._ensure_started()
            nets = [self._net_json(r) for r in self._networks.values()]
            nets += [self._pseudo("host"), self._pseudo("none")]
        return [n for n in nets if _matches(n, filters or {})]

    def remove(self, name_or_id: str) -> None:
        with self._lock:
            if name_or_id in ("host", "none") or any(
                self._pseudo(p)["Id"] == name_or_id for p in ("host", "none")
            ):
                raise PermissionDenied(f"{name_or_id} is a pre-defined network and cannot be removed")
            rec = self._find_network(name_or_id)
            if rec.default:
                raise PermissionDenied(f"{rec.name} is a pre-defined network and cannot be removed")
            users = [c for c in self._containers.values() if any(e.network_id == rec.id for e in c.endpoints)]
            if users:
                raise Conflict(f"error while removing network: network {rec.name} id {rec.id} has active "
                               f"endpoints ({', '.join(c.name or c.container_id[:12] for c in users)})")
            kernel.delete_link(self.ipr, rec.bridge)
            self._bridge_index.pop(rec.bridge, None)
            del self._networks[rec.id]
            self._pools.pop(rec.id, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, "networks", rec.id + ".json"))
            self._apply_rules()

    def prune(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        """Remove user-defined networks without endpoints; returns their names."""
        removed = []
        with self._lock:
            for rec in list(self._networks.values()):
                if rec.default:
                    continue
                if any(e.network_id == rec.id for c in self._containers.values() for e in c.endpoints):
                    continue
                if filters and not _matches(self._net_json(rec), filters):
                    continue
                self.remove(rec.id)
                removed.append(rec.name)
        return removed

    # ------------------------------------------------------------------ containers
    def _netns_path(self, cid: str) -> str:
        return os.path.join(self.netns_dir, cid)

    def _find_container(self, cid: str) -> ContainerRecord:
        rec = self._containers.get(cid)
        if rec is not None:
            return rec
        matches = [r for r in self._containers.values() if r.container_id.startswith(cid) or r.name == cid]
        if len(matches) == 1:
            return matches[0]
        raise NotFound(f"No such container: {cid} (no network endpoint)")

    def _wants_dns(self, crec: ContainerRecord) -> bool:
        return any(
            (n := self._networks.get(e.network_id)) is not None and not n.default for e in crec.endpoints
        )

    def setup_container(self, container_id: str, spec: ContainerNetworkSpec) -> ContainerNetworkInfo:
        """Create the container's netns and endpoints (see the module contract)."""
        with self._lock:
            self._ensure_started()
            if container_id in self._containers:
                self.teardown_container(container_id)
            mode = spec.mode or "bridge"
            if mode == "default":
                mode = "bridge"
            crec = ContainerRecord(
                container_id=container_id, name=spec.name.lstrip("/"),
                hostname=spec.hostname or container_id[:12], mode=mode,
                exposed_ports=list(spec.exposed_ports), dns=list(spec.dns),
                dns_search=list(spec.dns_search), dns_options=list(spec.dns_options),
                extra_hosts=list(spec.extra_hosts), domainname=spec.domainname,
            )
            if mode == "host":
                self._containers[container_id] = crec
                self._save_container(crec)
                return self._info(crec)
            if mode.startswith("container:"):
                other = self._find_container(mode.split(":", 1)[1])
                if other.netns_path is None:
                    raise Conflict(f"cannot join the network namespace of container {other.container_id[:12]}: "
                                   "it has none (host network)")
                crec.shared_from = other.container_id
                crec.netns_path = other.netns_path
                self._containers[container_id] = crec
                self._save_container(crec)
                return self._info(crec)
            net: NetworkRecord | None = None
            if mode != "none":
                net = self._find_network(mode)
                crec.mode = net.name
                if net.default and (spec.ips.get(net.name) or spec.ips.get(net.id)):
                    raise InvalidArgument("user specified IP address is supported on user defined networks only")
                if net.default and (spec.aliases.get(net.name) or spec.aliases.get(net.id)):
                    raise InvalidArgument("network-scoped alias is supported only for containers in user "
                                          "defined networks")
            extras: list[NetworkRecord] = []  # more networks at create (API >= 1.44, compose)
            if net is not None:
                for name in spec.extra_networks:
                    x = self._find_network(name)
                    if x.id != net.id and x not in extras:
                        extras.append(x)
            # ports first: "port is already allocated" before anything is set up
            held: list[socket.socket] = []
            if net is not None:
                try:
                    crec.ports = self._reserve_ports(spec, held)
                except BaseException:
                    ports.release(held)
                    raise
            path = self._netns_path(container_id)
            crec.netns_path = path
            created_ns = False
            dns_socks: list[socket.socket] | None = None
            try:
                want_dns = net is not None and (not net.default or any(not x.default for x in extras))

                def inside() -> None:
                    kernel.lo_up()
                    kernel.container_sysctls()

                with contextlib.suppress(FileNotFoundError):
                    kernel.remove_netns(path)
                kernel.create_netns(path, inside)
                created_ns = True
                if net is not None:
                    ep = self._attach(crec, net, "eth0",
                                      aliases=spec.aliases.get(net.name) or spec.aliases.get(net.id) or [],
                                      ip=spec.ips.get(net.name) or spec.ips.get(net.id),
                                      mac=spec.mac_address, default_route=True)
                    crec.endpoints.append(ep)
                    for n, extra in enumerate(extras, start=1):
                        crec.endpoints.append(self._attach(
                            crec, extra, f"eth{n}",
                            aliases=spec.aliases.get(extra.name) or spec.aliases.get(extra.id) or [],
                            ip=spec.ips.get(extra.name) or spec.ips.get(extra.id),
                            default_route=net.internal and not extra.internal and n == 1))
                if want_dns:
                    # after the veths: moving a device into a netns that already has the DNS
                    # DNAT table (conntrack, nat hooks) costs the kernel several ms more
                    from tugboat.network.dns import EmbeddedDNS

                    dns_socks = kernel.in_netns(path, lambda: EmbeddedDNS.open_sockets(self.dns_redirect))
                self._containers[container_id] = crec
                self._held[container_id] = held
                if crec.ports:
                    self._apply_rules()
                self._save_container(crec)
                if dns_socks:
                    self._dns_server().add(container_id, socks=dns_socks)
                    dns_socks = None
            except BaseException:
                ports.release(held)
                for ds in dns_socks or []:
                    ds.close()
                self._held.pop(container_id, None)
                self._containers.pop(container_id, None)
                for ep in crec.endpoints:
                    self._detach_kernel(ep)
                    if (pool := self._pools.get(ep.network_id)) is not None:
                        pool.release(ep.ip)
                if created_ns:
                    with contextlib.suppress(OSError):
                        kernel.remove_netns(path)
                if crec.ports:
                    with contextlib.suppress(Exception):
                        self._apply_rules()
                self._drop_container_file(container_id)
                raise
            return self._info(crec)

    def _reserve_ports(self, spec: ContainerNetworkSpec, held: list[socket.socket]) -> list[PortMapping]:
        reqs = ports.requests_from(spec.port_bindings, spec.publish_all, spec.exposed_ports)
        taken: set[tuple[str, str, int]] = set()
        for c in self._containers.values():
            for pm in c.ports:
                taken.add((pm.proto, pm.host_ip, pm.host_port))
        out: list[PortMapping] = []

        def clash(proto: str, ip: str, port: int) -> bool:
            return any(
                p == proto and hp == port and (not ip or not hi or hi == ip) for p, hi, hp in taken
            )

        for r in reqs:
            if r.host_port_lo == 0:
                s = ports.hold(r.proto, r.host_ip, 0)
                held.append(s)
                port = s.getsockname()[1]
            else:
                port = 0
                last_err: TugError | None = None
                for cand in range(r.host_port_lo, r.host_port_hi + 1):
                    if clash(r.proto, r.host_ip, cand):
                        last_err = Conflict(f"Bind for {r.host_ip or '0.0.0.0'}:{cand} failed: "
                                            "port is already allocated")
                        continue
                    try:
                        s = ports.hold(r.proto, r.host_ip, cand)
                    except Conflict as exc:
                        last_err = exc
                        continue
                    held.append(s)
                    port = cand
                    break
                if port == 0:
                    raise last_err or Conflict("port is already allocated")
            taken.add((r.proto, r.host_ip, port))
            out.append(PortMapping(proto=r.proto, container_port=r.container_port,
                                   host_ip=r.host_ip, host_port=port))
        return out

    def _attach(self, crec: ContainerRecord, net: NetworkRecord, ifname: str, *,
                aliases: list[str], ip: str | None, mac: str = "", default_route: bool) -> Endpoint:
        """Allocate an address on ``net`` and plug a veth into the container's netns."""
        pool = self._pools[net.id]
        pending = self._reaping.pop((net.id, ip), None) if ip else None
        if pending is not None:  # the address of a container just torn down: free it right now
            with contextlib.suppress(Exception):
                kernel.delete_link(self.ipr, pending)
            pool.release(ip or "")
        addr = pool.allocate(ip or None)
        host_veth = "veth" + ipam.random_hex(7)
        mac = mac or ipam.mac_for(addr)
        plen = pool.net.prefixlen
        try:
            br = self._bridge_index.get(net.bridge) or kernel.link_index(self.ipr, net.bridge)
            if br is None:
                self._ensure_bridge(net)
                br = kernel.link_index(self.ipr, net.bridge)
            fd = os.open(crec.netns_path or "", os.O_RDONLY | os.O_CLOEXEC)
            try:
                # host side: enslaved and up in the same request
                peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": fd, "address": mac}
                extra: dict[str, Any] = {}
                mtu = _mtu(net)
                if mtu:
                    peer["mtu"] = mtu
                    extra["mtu"] = mtu
                try:
                    self.ipr.link("add", ifname=host_veth, kind="veth", master=br, state="up", peer=peer,
                                  **extra)
                except Exception:
                    if kernel.link_index(self.ipr, net.bridge) == br:
                        raise
                    # the bridge went away underneath us (deleted by hand): re-create, retry once
                    self._bridge_index.pop(net.bridge, None)
                    self._ensure_bridge(net)
                    br = self._bridge_index[net.bridge]
                    self.ipr.link("add", ifname=host_veth, kind="veth", master=br, state="up", peer=peer,
                                  **extra)
            finally:
                os.close(fd)
            # br_netfilter DNATs a container's connection to its own published port while the
            # frame is still being bridged, and sends it back out of the port it came in by
            kernel.set_hairpin(host_veth)
            gw = net.gateway if default_route and not net.internal else None
            path = crec.netns_path or ""
            kernel.in_netns(path, lambda: kernel.configure_iface(ifname, addr, plen, gw))
        except BaseException as exc:
            pool.release(addr)
            with contextlib.suppress(Exception):
                kernel.delete_link(self.ipr, host_veth)
            if isinstance(exc, TugError):
                raise
            if "File exists" in str(exc) and ifname:
                raise Conflict(f"cannot attach to network {net.name}: {exc}") from None
            raise
        names = list(dict.fromkeys([*aliases]))
        return Endpoint(network_id=net.id, endpoint_id=os.urandom(32).hex(), ip=addr, prefixlen=plen,
                        gateway=net.gateway, mac=mac, host_veth=host_veth, ifname=ifname,
                        aliases=names, requested_ip=ip or "")

    def _detach_kernel(self, ep: Endpoint) -> None:
        with contextlib.suppress(Exception):
            kernel.delete_link(self.ipr, ep.host_veth)

    def _forget_container(self, cid: str, release_ips: bool = True) -> None:
        crec = self._containers.pop(cid, None)
        if crec is None:
            return
        if release_ips:
            for ep in crec.endpoints:
                if (pool := self._pools.get(ep.network_id)) is not None:
                    pool.release(ep.ip)
        ports.release(self._held.pop(cid, []))
        if self._dns is not None:
            self._dns.remove(cid)
        self._drop_container_file(cid)

    def teardown_container(self, container_id: str) -> None:
        """Remove the container's endpoints, ports, DNS entry and netns (idempotent).

        Deleting a veth costs the kernel ~25 ms (synchronize_net), so the host ends are deleted
        by a background reaper; their addresses return to the pool only once they are gone (no
        ARP clash with a successor). :meth:`flush` waits for the reaper."""
        with self._lock:
            crec = self._containers.get(container_id)
            if crec is None:
                path = self._netns_path(container_id)
                if os.path.exists(path):
                    kernel.remove_netns(path)
                return
            had_ports = bool(crec.ports)
            if crec.netns_path and not crec.shared_from:
                kernel.remove_netns(crec.netns_path)
            self._forget_container(container_id, release_ips=False)
            if had_ports:
                self._apply_rules()
            if crec.endpoints:
                for ep in crec.endpoints:
                    self._reaping[(ep.network_id, ep.ip)] = ep.host_veth
                self._reap(list(crec.endpoints))

    def _reap(self, eps: list[Endpoint]) -> None:
        if self._reaper is None:
            from concurrent.futures import ThreadPoolExecutor

            self._reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tug-net-reaper")
        self._reaper.submit(self._reap_now, eps)

    def _reap_now(self, eps: list[Endpoint]) -> None:
        if self._reaper_ipr is None:
            self._reaper_ipr = kernel.iproute()
        for ep in eps:
            try:
                kernel.delete_link(self._reaper_ipr, ep.host_veth)
            except Exception as exc:
                log.warning("cannot delete %s: %s", ep.host_veth, exc)
        with self._lock:
            for ep in eps:
                if self._reaping.get((ep.network_id, ep.ip)) != ep.host_veth:
                    continue  # already reaped synchronously by a set-up that wanted this address
                del self._reaping[(ep.network_id, ep.ip)]
                if (pool := self._pools.get(ep.network_id)) is not None:
                    pool.release(ep.ip)

    def flush(self) -> None:
        """Wait until background veth deletions (and nft context frees) are done; do not call
        with the lock held."""
        reaper = self._reaper
        if reaper is not None:
            reaper.submit(lambda: None).result()
        if self._dns is not None:
            from tugboat.network.dns import wait_closed

            wait_closed()

    def connect(self, container_id: str, network: str, aliases: tuple[str, ...] | list[str] = (),
                ip: str | None = None) -> dict[str, Any]:
        """Attach a running container to one more network; returns its Networks entry."""
        with self._lock:
            self._ensure_started()
            crec = self._find_container(container_id)
            net = self._find_network(network)
            if crec.mode == "host" or crec.shared_from or crec.netns_path is None:
                raise Conflict("container sharing network namespace with another container or host "
                               "cannot be connected to any other network")
            if any(e.network_id == net.id for e in crec.endpoints):
                raise Conflict(f"endpoint with name {crec.name} already exists in network {net.name}")
            used = {e.ifname for e in crec.endpoints}
            n = 0
            while f"eth{n}" in used:
                n += 1
            has_default = any(not self._networks[e.network_id].internal
                              for e in crec.endpoints if e.network_id in self._networks)
            ep = self._attach(crec, net, f"eth{n}", aliases=list(aliases), ip=ip, default_route=not has_default)
            crec.endpoints.append(ep)
            self._save_container(crec)
            if crec.ports:
                self._apply_rules()
            if not net.default and (self._dns is None or not self._dns.has(crec.container_id)):
                self._dns_server().add(crec.container_id, crec.netns_path)
            return self._endpoint_json(crec, ep)

    def disconnect(self, container_id: str, network: str, force: bool = False) -> None:
        with self._lock:
            crec = self._find_container(container_id)
            net = self._find_network(network)
            ep = next((e for e in crec.endpoints if e.network_id == net.id), None)
            if ep is None:
                raise NotFound(f"container {crec.container_id[:12]} is not connected to network {net.name}")
            self._detach_kernel(ep)
            if (pool := self._pools.get(ep.network_id)) is not None:
                pool.release(ep.ip)
            crec.endpoints.remove(ep)
            self._save_container(crec)
            if crec.ports:
                self._apply_rules()
            if not self._wants_dns(crec) and self._dns is not None:
                self._dns.remove(crec.container_id)

    def rename(self, container_id: str, new_name: str) -> None:
        """``docker rename``: the embedded DNS answers to the new name from now on."""
        with self._lock:
            crec = self._containers.get(container_id)
            if crec is not None:
                crec.name = new_name.lstrip("/")
                self._save_container(crec)

    def container_info(self, container_id: str) -> ContainerNetworkInfo:
        """The current info of a set-up container (for inspect after connect/disconnect)."""
        with self._lock:
            return self._info(self._find_container(container_id))

    # ------------------------------------------------------------------ info
    def _endpoint_json(self, crec: ContainerRecord, ep: Endpoint) -> dict[str, Any]:
        dns_names = [crec.name, crec.container_id[:12], *ep.aliases] if crec.name else [
            crec.container_id[:12], *ep.aliases]
        net = self._networks.get(ep.network_id)
        is_default = net is not None and net.default
        return {
            "IPAMConfig": {"IPv4Address": ep.requested_ip} if ep.requested_ip else None,
            "Links": None,
            "Aliases": None if is_default else (list(ep.aliases) or None),
            "MacAddress": ep.mac,
            "DriverOpts": None,
            "GwPriority": 0,
            "NetworkID": ep.network_id,
            "EndpointID": ep.endpoint_id,
            "Gateway": ep.gateway,
            "IPAddress": ep.ip,
            "IPPrefixLen": ep.prefixlen,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DNSNames": None if is_default else dns_names,
        }

    def _info(self, crec: ContainerRecord) -> ContainerNetworkInfo:
        src = crec
        if crec.shared_from and crec.shared_from in self._containers:
            src = self._containers[crec.shared_from]
        host_resolv = read_host_resolv()
        if src.mode == "host":
            hosts = _read("/etc/hosts") or files.hosts_file(socket.gethostname(), "", [], [])
            extra = [files.parse_extra_host(e, None) for e in crec.extra_hosts]
            hosts += "".join(f"{ip}\t{name}\n" for name, ip in extra)
            resolv = files.resolv_conf(host_resolv, embedded=False, dns=crec.dns,
                                       search=crec.dns_search, options=crec.dns_options)
            resolv = host_resolv if not (crec.dns or crec.dns_search or crec.dns_options) and host_resolv else resolv
            return ContainerNetworkInfo(netns_path=None, networks={}, ports={}, hosts=hosts,
                                        resolv_conf=resolv, hostname=crec.hostname, sandbox_key="")
        networks: dict[str, dict[str, Any]] = {}
        ips: list[str] = []
        gw = None
        for ep in src.endpoints:
            net = self._networks.get(ep.network_id)
            if net is None:
                continue
            networks[net.name] = self._endpoint_json(src, ep)
            ips.append(ep.ip)
            gw = gw or ep.gateway
        if src.mode == "none" and not src.endpoints:
            networks["none"] = {
                "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
                "GwPriority": 0, "NetworkID": self._pseudo("none")["Id"], "EndpointID": "", "Gateway": "",
                "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "DNSNames": None,
            }
        extra = [files.parse_extra_host(e, gw) for e in crec.extra_hosts]
        hosts = files.hosts_file(crec.hostname, crec.domainname, ips[:1] if ips else [], extra)
        resolv = files.resolv_conf(host_resolv, embedded=self._wants_dns(src), dns=crec.dns,
                                   search=crec.dns_search, options=crec.dns_options)
        port_map: dict[str, list[dict[str, str]] | None] = {}
        for key in src.exposed_ports:
            p, proto = ports.parse_port_proto(key)
            port_map.setdefault(f"{p}/{proto}", None)
        for pm in src.ports:
            key = f"{pm.container_port}/{pm.proto}"
            lst = port_map.get(key) or []
            lst.append({"HostIp": pm.host_ip or "0.0.0.0", "HostPort": str(pm.host_port)})
            port_map[key] = lst
        return ContainerNetworkInfo(netns_path=src.netns_path, networks=networks, ports=port_map,
                                    hosts=hosts, resolv_conf=resolv, hostname=crec.hostname,
                                    sandbox_key=src.netns_path or "")

    # ------------------------------------------------------------------ embedded DNS
    def _dns_resolve(self, cid: str, qname: str, qtype: str) -> list[str] | None:
        with self._lock:
            crec = self._containers.get(cid)
            if crec is None:
                return None
            nets = [e.network_id for e in crec.endpoints
                    if (n := self._networks.get(e.network_id)) is not None and not n.default]
            if qtype == "PTR":
                if not qname.endswith(".in-addr.arpa"):
                    return None
                parts = qname[: -len(".in-addr.arpa")].split(".")
                if len(parts) != 4:
                    return None
                ip = ".".join(reversed(parts))
                for other in self._containers.values():
                    for ep in other.endpoints:
                        if ep.network_id in nets and ep.ip == ip:
                            name = other.name or other.container_id[:12]
                            return [f"{name}.{self._networks[ep.network_id].name}"]
                return None
            found: list[str] = []
            for nid in nets:
                netname = self._networks[nid].name.lower()
                for other in self._containers.values():
                    for ep in other.endpoints:
                        if ep.network_id != nid:
                            continue
                        names = {other.container_id[:12], *(a.lower() for a in ep.aliases)}
                        if other.name:
                            names.add(other.name.lower())
                        full = names | {f"{n}.{netname}" for n in names}
                        if qname in full and ep.ip not in found:
                            found.append(ep.ip)
            return found or None

    def _dns_upstreams_for(self, cid: str) -> list[tuple[str, int]]:
        from tugboat.network.dns import host_nameservers, parse_upstream

        with self._lock:
            crec = self._containers.get(cid)
            servers = (crec.dns if crec is not None and crec.dns else None) or self.dns_upstreams \
                or host_nameservers()
        return [parse_upstream(s) for s in servers]


def _mtu(net: NetworkRecord) -> int | None:
    """com.docker.network.driver.mtu, when set (validated at create)."""
    raw = net.options.get("com.docker.network.driver.mtu")
    if not raw or net.default:
        return None
    return int(raw)


def _opt_bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _matches(net: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "name":
            if not any(v in net["Name"] for v in values):
                return False
        elif key == "id":
            if not any(net["Id"].startswith(v) for v in values):
                return False
        elif key == "driver":
            if net["Driver"] not in values:
                return False
        elif key == "scope":
            if net["Scope"] not in values:
                return False
        elif key == "type":
            builtin = net["Name"] in PREDEFINED
            if not any((v == "builtin" and builtin) or (v == "custom" and not builtin) for v in values):
                return False
        elif key == "label":
            labels = net.get("Labels") or {}
            for v in values:
                k, eq, val = v.partition("=")
                if k not in labels or (eq and labels[k] != val):
                    return False
        elif key == "dangling":
            dangling = not net.get("Containers")
            want = values[0].lower() in ("1", "true")
            if dangling != want:
                return False
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return True

