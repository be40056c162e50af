"""metrics.k8s.io/v1beta1, served from what node agents push (in memory, not persisted).

Node agents (or simulated nodes) report usage with PUT (JSON body, any client with credentials):
- ``PUT /apis/metrics.k8s.io/v1beta1/nodes/NODE`` body ``{"usage": {"cpu": "250m", "memory": "512Mi"},
  "window": "30s"}`` (optional ``timestamp``; a full NodeMetrics object is accepted too);
- ``PUT /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods/POD`` body ``{"containers": [{"name": "c",
  "usage": {"cpu": "1234567n", "memory": "5120Ki"}}], "window": "30s"}``.
Reads (``kubectl top``, the HPA controller): GET of the collections and items, NodeMetricsList /
PodMetricsList. Entries older than ``ttl`` seconds (default 300) are dropped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from tugboat.cluster.apiserver import meta
from tugboat.cluster.apiserver.meta import ApiError

if TYPE_CHECKING:
    from tugboat.cluster.apiserver.server import APIServer

GV = "metrics.k8s.io/v1beta1"


class MetricsStore:
    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self.nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        self.pods: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def _fresh(self, entries: dict[Any, tuple[float, dict[str, Any]]]) -> list[tuple[Any, dict[str, Any]]]:
        cutoff = time.monotonic() - self.ttl
        for k in [k for k, (t, _) in entries.items() if t < cutoff]:
            entries.pop(k, None)
        return [(k, v) for k, (_, v) in sorted(entries.items())]

    def put_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise meta.invalid("NodeMetrics", "metrics.k8s.io", name, [("FieldValueRequired", "usage", "Required value")])
        obj = {"kind": "NodeMetrics", "apiVersion": GV,
               "metadata": {"name": name, "creationTimestamp": meta.now_rfc3339(),
                            "labels": (body.get("metadata") or {}).get("labels") or {}},
               "timestamp": body.get("timestamp") or meta.now_rfc3339(), "window": body.get("window") or "30s",
               "usage": usage}
        self.nodes[name] = (time.monotonic(), obj)
        return obj

    def put_pod(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        cs = body.get("containers")
        if not isinstance(cs, list):
            raise meta.invalid("PodMetrics", "metrics.k8s.io", name,
                               [("FieldValueRequired", "containers", "Required value")])
        obj = {"kind": "PodMetrics", "apiVersion": GV,
               "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta.now_rfc3339(),
                            "labels": (body.get("metadata") or {}).get("labels") or {}},
               "timestamp": body.get("timestamp") or meta.now_rfc3339(), "window": body.get("window") or "30s",
               "containers": cs}
        self.pods[(ns, name)] = (time.monotonic(), obj)
        return obj

    def forget_pod(self, ns: str, name: str) -> None:
        self.pods.pop((ns, name), None)

    def forget_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    async def handle(self, srv: APIServer, request: web.Request, version: str, rest: list[str]) -> web.Response:
        if version != "v1beta1":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if not rest:
            return srv.discovery.resource_list("metrics.k8s.io", "v1beta1")
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        kind = rest[0]
        name = rest[1] if len(rest) > 1 else None
        if kind not in ("nodes", "pods") or len(rest) > 2 or (kind == "nodes" and ns):
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        m = request.method
        if m == "PUT" and name:
            body = msgspec.json.decode(await srv.read_body(request))
            if kind == "nodes":
                return web.json_response(self.put_node(name, body))
            if ns is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
            return web.json_response(self.put_pod(ns, name, body))
        if m != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        sel = meta.parse_label_selector(request.query.get("labelSelector"))
        if kind == "nodes":
            items = [v for _, v in self._fresh(self.nodes)]
        else:
            items = [v for (n, _), v in self._fresh(self.pods) if ns is None or n == ns]
        if sel is not None:
            items = [i for i in items if sel(i["metadata"].get("labels") or {})]
        if name:
            for i in items:
                if i["metadata"]["name"] == name:
                    return web.json_response(i)
            raise meta.not_found(kind, "metrics.k8s.io", name)
        lk = "NodeMetricsList" if kind == "nodes" else "PodMetricsList"
        return web.json_response({"kind": lk, "apiVersion": GV, "metadata": {}, "items": items})
