"""Endpoints and EndpointSlices from Services and their (ready) pods."""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ConflictError, NotFoundError
from tugboat.cluster.client.util import match_labels, now, owner_ref, pod_ready
from tugboat.cluster.controllers.base import Controller

log = logging.getLogger(__name__)

SLICE_MAX = 100
MANAGED_BY = "endpointslice-controller.k8s.io"


def _target_port(svc_port: dict, pod: dict) -> int | None:
    tp = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(tp, int):
        return tp
    if isinstance(tp, str) and tp.isdigit():
        return int(tp)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == tp and (p.get("protocol") or "TCP") == (svc_port.get("protocol") or "TCP"):
                return int(p["containerPort"])
    return None


def service_pods(svc: dict, pods: list[dict]) -> list[dict]:
    sel = (svc.get("spec") or {}).get("selector")
    out = []
    for p in pods:
        md = p["metadata"]
        if md.get("deletionTimestamp") or not (p.get("status") or {}).get("podIP"):
            continue
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if match_labels({"matchLabels": sel}, md.get("labels")):
            out.append(p)
    return sorted(out, key=lambda p: p["metadata"]["name"])


def apiserver_endpoint(server: str) -> tuple[str, int] | None:
    """The API server's address as pods can reach it (the controller manager's own server URL),
    for the ``default/kubernetes`` Service; None when it is a name or a loopback address."""
    u = urlsplit(server)
    try:
        ip = ipaddress.ip_address(u.hostname or "")
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified or ip.version != 4:
        return None
    return str(ip), u.port or (443 if u.scheme == "https" else 80)


def _hostname(pod: dict, svc: dict) -> str:
    """kube's ShouldSetHostname: a pod with spec.hostname whose spec.subdomain names this service
    gets a DNS name of its own under it (``HOST.SVC.NS.svc.DOMAIN``)."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"] and \
            pod["metadata"].get("namespace") == svc["metadata"].get("namespace"):
        return str(spec["hostname"])
    return ""


def _is_apiserver_service(svc: dict) -> bool:
    md = svc.get("metadata") or {}
    return md.get("namespace") == "default" and md.get("name") == "kubernetes" and not (svc.get("spec") or {}).get(
        "selector")


class _Base(Controller):
    def setup(self) -> None:
        self.svcs = self.ctx.informer(R.SERVICES)
        self.pods = self.ctx.informer(R.PODS)
        self.svcs.add_handler(*self.handlers(self.enqueue))
        self.pods.add_handler(self._pod, lambda old, new: (self._pod(old), self._pod(new)), self._pod)

    def _pod(self, pod: dict) -> None:
        labels = pod["metadata"].get("labels") or {}
        for svc in self.svcs.list(pod["metadata"]["namespace"]):
            sel = (svc.get("spec") or {}).get("selector")
            if sel and all(labels.get(k) == v for k, v in sel.items()):
                self.enqueue(svc)


class EndpointsController(_Base):
    name = "endpoints"
    component = "endpoint-controller"

    def setup(self) -> None:
        super().setup()
        self.eps = self.ctx.informer(R.ENDPOINTS)

    async def sync(self, key: str) -> None:
        svc = self.svcs.get(key)
        ns, name = key.split("/", 1)
        if svc is None:
            if self.eps.get(key) is not None:
                try:
                    await self.client.delete(R.ENDPOINTS, name, ns)
                except NotFoundError:
                    pass
            return
        spec = svc.get("spec") or {}
        if _is_apiserver_service(svc):
            await self._apiserver_endpoints(svc)
            return
        if not spec.get("selector"):
            return
        pods = service_pods(svc, self.pods.list(ns))
        publish = bool(spec.get("publishNotReadyAddresses"))
        ready, notready = [], []
        ports_out: list[dict] | None = None
        for p in pods:
            ports = []
            ok = True
            for sp in spec.get("ports") or []:
                tp = _target_port(sp, p)
                if tp is None:
                    ok = False
                    break
                e = {"port": tp, "protocol": sp.get("protocol") or "TCP"}
                if sp.get("name"):
                    e["name"] = sp["name"]
                ports.append(e)
            if not ok:
                continue
            if ports_out is None:
                ports_out = ports
            addr = {"ip": p["status"]["podIP"], "nodeName": p["spec"].get("nodeName"),
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                  "uid": p["metadata"]["uid"]}}
            if _hostname(p, svc):
                addr["hostname"] = _hostname(p, svc)
            (ready if (pod_ready(p) or publish) else notready).append(addr)
        subsets = []
        if ready or notready:
            sub: dict = {}
            if ready:
                sub["addresses"] = ready
            if notready:
                sub["notReadyAddresses"] = notready
            if ports_out:
                sub["ports"] = ports_out
            subsets.append(sub)
        await self._write(svc, subsets)

    async def _apiserver_endpoints(self, svc: dict) -> None:
        """kube-apiserver keeps ``default/kubernetes`` pointing at itself; here the controller manager
        does it, with the address it reaches the API server at."""
        ep = apiserver_endpoint(self.client.base)
        if ep is None:
            return
        port = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name") == "https"), {})
        await self._write(svc, [{"addresses": [{"ip": ep[0]}],
                                 "ports": [{"name": port.get("name", "https"), "port": ep[1], "protocol": "TCP"}]}])

    async def _write(self, svc: dict, subsets: list[dict]) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        key = f"{ns}/{name}"
        cur = self.eps.get(key)
        labels = dict(svc["metadata"].get("labels") or {})
        if cur is not None and (cur.get("subsets") or []) == subsets and (cur["metadata"].get("labels") or {}) == labels:
            return
        body = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now()}},
                "subsets": subsets}
        if cur is None:
            try:
                await self.client.create(R.ENDPOINTS, body, ns)
                return
            except ConflictError:
                cur = await self.client.get(R.ENDPOINTS, name, ns)
        body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        await self.client.update(R.ENDPOINTS, body)


class EndpointSliceController(_Base):
    name = "endpointslice"
    component = "endpoint-slice-controller"

    def setup(self) -> None:
        super().setup()
        self.slices = self.ctx.informer(R.ENDPOINTSLICES)
        self.slices.add_index("service", lambda o: [
            f"{o['metadata']['namespace']}/{(o['metadata'].get('labels') or {}).get('kubernetes.io/service-name', '')}"]
            if (o["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by") == MANAGED_BY else [])

    async def sync(self, key: str) -> None:
        svc = self.svcs.get(key)
        ns = key.split("/", 1)[0]
        existing = sorted(self.slices.by_index("service", key), key=lambda o: o["metadata"]["name"])
        if svc is not None and _is_apiserver_service(svc):
            ep = apiserver_endpoint(self.client.base)
            if ep is not None:
                await self._write(svc, existing, [[{"addresses": [ep[0]], "conditions": {
                    "ready": True, "serving": True, "terminating": False}}]],
                    [{"name": "https", "port": ep[1], "protocol": "TCP"}])
            return
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            return  # the garbage collector removes slices of deleted services (owner references)
        spec = svc["spec"]
        pods = service_pods(svc, self.pods.list(ns))
        publish = bool(spec.get("publishNotReadyAddresses"))
        endpoints = []
        ports_out: list[dict] = []
        for p in pods:
            ports = []
            for sp in spec.get("ports") or []:
                tp = _target_port(sp, p)
                if tp is None:
                    continue
                ports.append({"name": sp.get("name") or "", "port": tp, "protocol": sp.get("protocol") or "TCP"})
            if not ports_out:
                ports_out = ports
            ready = pod_ready(p) or publish
            ep = {"addresses": [p["status"]["podIP"]],
                  "conditions": {"ready": ready, "serving": pod_ready(p), "terminating": False},
                  "nodeName": p["spec"].get("nodeName"),
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
            if _hostname(p, svc):
                ep["hostname"] = _hostname(p, svc)
            endpoints.append(ep)
        chunks = [endpoints[i : i + SLICE_MAX] for i in range(0, len(endpoints), SLICE_MAX)] or [[]]
        await self._write(svc, existing, chunks, ports_out)

    async def _write(self, svc: dict, existing: list[dict], chunks: list[list[dict]], ports_out: list[dict]) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        labels = {**(svc["metadata"].get("labels") or {}), "kubernetes.io/service-name": name,
                  "endpointslice.kubernetes.io/managed-by": MANAGED_BY}
        for i, chunk in enumerate(chunks):
            body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": ns, "labels": labels, "ownerReferences": [
                        owner_ref({**svc, "apiVersion": "v1", "kind": "Service"})],
                        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now()}},
                    "addressType": "IPv4", "endpoints": chunk, "ports": ports_out}
            if i < len(existing):
                cur = existing[i]
                if cur.get("endpoints") == chunk and cur.get("ports") == ports_out and cur["metadata"].get("labels") == labels:
                    continue
                body["metadata"]["name"] = cur["metadata"]["name"]
                body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
                await self.client.update(R.ENDPOINTSLICES, body)
            else:
                body["metadata"]["generateName"] = f"{name}-"
                await self.client.create(R.ENDPOINTSLICES, body, ns)
        for cur in existing[len(chunks):]:
            try:
                await self.client.delete(R.ENDPOINTSLICES, cur["metadata"]["name"], ns)
            except NotFoundError:
                pass
