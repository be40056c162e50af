"""An in-memory view of Services and their EndpointSlices, shared by the service proxy and cluster DNS.

Fed from two informers (or directly, in tests) through :meth:`ServiceModel.apply_service`,
:meth:`ServiceModel.delete_service`, :meth:`ServiceModel.apply_slice` and
:meth:`ServiceModel.delete_slice`; readers ask :meth:`ServiceModel.service` /
:meth:`ServiceModel.endpoints`. Every change bumps :attr:`ServiceModel.generation` and calls the
subscribers (synchronously; they should only schedule work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str  # TCP | UDP | SCTP
    port: int
    target_port: int | str
    node_port: int | None = None


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    session_affinity: bool = False
    affinity_timeout: int = 10800
    external_name: str | None = None
    publish_not_ready: bool = False

    @property
    def headless(self) -> bool:
        return self.type != "ExternalName" and (not self.cluster_ips or self.cluster_ips[0] == "None")

    @property
    def cluster_ip(self) -> str | None:
        return None if self.headless or not self.cluster_ips else self.cluster_ips[0]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> ServiceInfo:
        md = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        ports = tuple(
            ServicePort(
                name=p.get("name") or "",
                protocol=p.get("protocol") or "TCP",
                port=int(p["port"]),
                target_port=p.get("targetPort") if p.get("targetPort") not in (None, "", 0) else int(p["port"]),
                node_port=p.get("nodePort"),
            )
            for p in spec.get("ports") or [] if p.get("port")
        )
        timeout = (((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")) or 10800
        return cls(
            namespace=md.get("namespace") or "default",
            name=md["name"],
            type=spec.get("type") or "ClusterIP",
            cluster_ips=tuple(ips),
            ports=ports,
            session_affinity=spec.get("sessionAffinity") == "ClientIP",
            affinity_timeout=int(timeout),
            external_name=spec.get("externalName"),
            publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        )


@dataclass(frozen=True)
class EndpointInfo:
    ip: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str | None = None
    node_name: str | None = None
    # (port name, protocol) -> port number
    ports: tuple[tuple[str, str, int], ...] = ()

    def port_for(self, name: str, protocol: str) -> int | None:
        for n, proto, num in self.ports:
            if n == name and proto == protocol:
                return num
        return None


@dataclass
class _Slice:
    service_key: str
    endpoints: list[EndpointInfo] = field(default_factory=list)


def _slice_endpoints(obj: dict[str, Any]) -> list[EndpointInfo]:
    if obj.get("addressType", "IPv4") not in ("IPv4",):
        return []
    ports = tuple((p.get("name") or "", p.get("protocol") or "TCP", int(p["port"]))
                  for p in obj.get("ports") or [] if p.get("port") is not None)
    out = []
    for ep in obj.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        for ip in ep.get("addresses") or []:
            out.append(EndpointInfo(ip=ip, ready=ready, serving=serving,
                                    terminating=bool(cond.get("terminating")),
                                    hostname=ep.get("hostname"), node_name=ep.get("nodeName"), ports=ports))
    return out


class ServiceModel:
    def __init__(self) -> None:
        self._services: dict[str, ServiceInfo] = {}
        self._slices: dict[str, _Slice] = {}
        self._by_service: dict[str, set[str]] = {}
        self._ip_to_service: dict[str, str] = {}
        self.generation = 0
        self._subscribers: list[Callable[[], None]] = []

    # ---- change notification
    def subscribe(self, cb: Callable[[], None]) -> None:
        self._subscribers.append(cb)

    def _changed(self) -> None:
        self.generation += 1
        for cb in list(self._subscribers):
            cb()

    # ---- writes
    def apply_service(self, obj: dict[str, Any]) -> None:
        info = ServiceInfo.from_object(obj)
        old = self._services.get(info.key)
        if old == info:
            return
        if old and old.cluster_ip:
            self._ip_to_service.pop(old.cluster_ip, None)
        self._services[info.key] = info
        if info.cluster_ip:
            self._ip_to_service[info.cluster_ip] = info.key
        self._changed()

    def delete_service(self, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        key = f"{md.get('namespace') or 'default'}/{md.get('name')}"
        old = self._services.pop(key, None)
        if old is None:
            return
        if old.cluster_ip:
            self._ip_to_service.pop(old.cluster_ip, None)
        self._changed()

    def apply_slice(self, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        key = f"{md.get('namespace') or 'default'}/{md.get('name')}"
        if not svc:
            return
        skey = f"{md.get('namespace') or 'default'}/{svc}"
        new = _Slice(skey, _slice_endpoints(obj))
        old = self._slices.get(key)
        if old is not None and old.service_key == new.service_key and old.endpoints == new.endpoints:
            return
        if old is not None and old.service_key != skey:
            self._by_service.get(old.service_key, set()).discard(key)
        self._slices[key] = new
        self._by_service.setdefault(skey, set()).add(key)
        self._changed()

    def delete_slice(self, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        key = f"{md.get('namespace') or 'default'}/{md.get('name')}"
        old = self._slices.pop(key, None)
        if old is None:
            return
        self._by_service.get(old.service_key, set()).discard(key)
        self._changed()

    def attach(self, services_informer: Any, slices_informer: Any) -> None:
        """Keep this model in step with two :class:`~tugboat.cluster.client.Informer`s."""
        services_informer.add_handler(self.apply_service, lambda _o, n: self.apply_service(n), self.delete_service)
        slices_informer.add_handler(self.apply_slice, lambda _o, n: self.apply_slice(n), self.delete_slice)

    # ---- reads
    def services(self) -> list[ServiceInfo]:
        return list(self._services.values())

    def service(self, namespace: str, name: str) -> ServiceInfo | None:
        return self._services.get(f"{namespace}/{name}")

    def service_by_ip(self, ip: str) -> ServiceInfo | None:
        key = self._ip_to_service.get(ip)
        return self._services.get(key) if key else None

    def has_namespace(self, namespace: str) -> bool:
        return any(s.namespace == namespace for s in self._services.values())

    def endpoints(self, namespace: str, name: str, *, include_not_ready: bool = False) -> list[EndpointInfo]:
        """Endpoints of a service, deduplicated by IP, in a stable order (by IP)."""
        seen: dict[str, EndpointInfo] = {}
        for sk in sorted(self._by_service.get(f"{namespace}/{name}", ())):
            for ep in self._slices[sk].endpoints:
                if not (ep.ready or include_not_ready):
                    continue
                prev = seen.get(ep.ip)
                if prev is None or (ep.ready and not prev.ready):
                    seen[ep.ip] = ep
        return [seen[ip] for ip in sorted(seen, key=_ip_sort_key)]


def _ip_sort_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in ip.split("."))
    except ValueError:
        return (1 << 32,)
