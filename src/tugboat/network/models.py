"""Typed records of the network area: what callers pass in, what they get back, what is stored.

On disk (under ``<root>/network/``, every file written atomically):

- ``networks/<id>.json``   one :class:`NetworkRecord` per network (the default ``bridge`` too)
- ``containers/<id>.json`` one :class:`ContainerRecord` per container with networking: its netns
  path, endpoints (the IPAM allocations: an address is allocated exactly while an endpoint
  record holds it) and published ports
- ``state.json``           :class:`HostState` (the ip_forward value found before we changed it)
- ``netns/<id>``           bind mounts of the containers' network namespaces
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec


@dataclass
class ContainerNetworkSpec:
    """What the engine asks for when it starts a container (docker run's network flags)."""

    mode: str = "bridge"  # "bridge" | "none" | "host" | "<network name or id>" | "container:<id>"
    name: str = ""  # container name (without the leading "/"), for DNS
    hostname: str = ""
    aliases: dict[str, list[str]] = field(default_factory=dict)  # network -> --network-alias
    ips: dict[str, str] = field(default_factory=dict)  # network -> requested --ip
    port_bindings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    publish_all: bool = False
    exposed_ports: list[str] = field(default_factory=list)  # "80/tcp", "53/udp", "8080"
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)  # "name:ip" (or "name=ip")
    mac_address: str = ""
    domainname: str = ""
    extra_networks: list[str] = field(default_factory=list)  # attached too, as eth1, eth2 ...


@dataclass
class ContainerNetworkInfo:
    """What the engine gets back: where the netns is and what to show in inspect."""

    netns_path: str | None
    networks: dict[str, dict[str, Any]]  # network name -> NetworkSettings.Networks entry
    ports: dict[str, list[dict[str, str]] | None]  # NetworkSettings.Ports
    hosts: str  # /etc/hosts contents
    resolv_conf: str  # /etc/resolv.conf contents
    hostname: str
    sandbox_key: str = ""  # NetworkSettings.SandboxKey (the netns path, "" for host)


class NetworkRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    driver: str = "bridge"
    bridge: str = ""  # interface name
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    labels: dict[str, str] = {}
    options: dict[str, str] = {}
    created: str = ""
    default: bool = False  # the default "bridge" network: no embedded DNS
    ipam_config_given: bool = False  # subnet given by the user (shown in inspect as given)


class Endpoint(msgspec.Struct, kw_only=True):
    network_id: str
    endpoint_id: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    host_veth: str  # the host side of the veth pair
    ifname: str  # the interface name in the container (eth0, eth1 ...)
    aliases: list[str] = []
    requested_ip: str = ""


class PortMapping(msgspec.Struct, kw_only=True):
    proto: str  # tcp | udp
    container_port: int
    host_ip: str  # "" or "0.0.0.0" means all addresses
    host_port: int


class ContainerRecord(msgspec.Struct, kw_only=True):
    container_id: str
    name: str = ""
    hostname: str = ""
    mode: str = "bridge"
    netns_path: str | None = None
    shared_from: str = ""  # container:<id> mode: whose netns
    endpoints: list[Endpoint] = []
    ports: list[PortMapping] = []
    exposed_ports: list[str] = []
    dns: list[str] = []
    dns_search: list[str] = []
    dns_options: list[str] = []
    extra_hosts: list[str] = []
    domainname: str = ""


class HostState(msgspec.Struct, kw_only=True):
    ip_forward_prior: str | None = None  # "0"/"1" as found before we set it to 1
