"""Discovery documents: aggregated (apidiscovery.k8s.io/v2) and legacy, built once from the registry."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.registry import Registry, ResourceType

AGG_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGG_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# groups served outside the generic registry
# group -> (version, [resource name, kind, namespaced, verbs])
VIRTUAL_GROUPS: dict[str, tuple[str, list[tuple[str, str, bool, list[str]]]]] = {
    "metrics.k8s.io": ("v1beta1", [("nodes", "NodeMetrics", False, ["get", "list"]),
                                   ("pods", "PodMetrics", True, ["get", "list"])]),
    "authentication.k8s.io": ("v1", [("selfsubjectreviews", "SelfSubjectReview", False, ["create"]),
                                     ("tokenreviews", "TokenReview", False, ["create"])]),
}


def _rt_disc(rt: ResourceType) -> dict[str, Any]:
    d: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": sorted(rt.verbs),
    }
    if rt.short_names:
        d["shortNames"] = rt.short_names
    if rt.categories:
        d["categories"] = rt.categories
    subs = []
    for name, ((g, v, k), verbs) in rt.subresources.items():
        subs.append({"subresource": name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
    if subs:
        d["subresources"] = subs
    return d


def _rt_legacy(rt: ResourceType) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
        "verbs": sorted(rt.verbs),
    }]
    if rt.short_names:
        out[0]["shortNames"] = rt.short_names
    if rt.categories:
        out[0]["categories"] = rt.categories
    for name, ((g, v, k), verbs) in rt.subresources.items():
        e: dict[str, Any] = {"name": f"{rt.plural}/{name}", "singularName": "", "namespaced": rt.namespaced,
                             "kind": k, "verbs": verbs}
        if (g, v) != (rt.group, rt.version):
            e["group"], e["version"] = g, v
        out.append(e)
    return out


class Discovery:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        enc = msgspec.json.encode
        groups = [g for g in registry.groups if g]
        self.group_names = sorted(groups, key=lambda g: (g.count(".") > 0, g))
        # aggregated
        core = {"metadata": {"creationTimestamp": None}, "versions": [self._agg_version("", "v1")]}
        self.agg_api = enc({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                            "metadata": {}, "items": [core]})
        items = []
        for g in self.group_names:
            items.append({"metadata": {"name": g, "creationTimestamp": None},
                          "versions": [self._agg_version(g, v) for v in registry.groups[g]]})
        for vg, (vv, vres) in VIRTUAL_GROUPS.items():
            items.append({"metadata": {"name": vg, "creationTimestamp": None}, "versions": [{
                "version": vv, "freshness": "Current",
                "resources": [{"resource": name, "responseKind": {"group": vg, "version": vv, "kind": kind},
                               "scope": "Namespaced" if nsd else "Cluster", "verbs": verbs}
                              for name, kind, nsd, verbs in vres]}]})
        self.agg_apis = enc({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                             "metadata": {}, "items": items})
        # legacy
        self.legacy_api = enc({"kind": "APIVersions", "versions": ["v1"],
                               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
        self.legacy_groups = {g: self._legacy_group(g) for g in [*self.group_names, *VIRTUAL_GROUPS]}
        self.legacy_apis = enc({"kind": "APIGroupList", "apiVersion": "v1",
                                "groups": list(self.legacy_groups.values())})
        self.resource_lists: dict[tuple[str, str], bytes] = {}
        for g, versions in registry.groups.items():
            for v in versions:
                res: list[dict[str, Any]] = []
                for rt in registry.in_group_version(g, v):
                    res.extend(_rt_legacy(rt))
                self.resource_lists[(g, v)] = enc({"kind": "APIResourceList", "apiVersion": "v1",
                                                   "groupVersion": f"{g}/{v}" if g else v, "resources": res})
        for vg, (vv, vres) in VIRTUAL_GROUPS.items():
            self.resource_lists[(vg, vv)] = enc({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{vg}/{vv}",
                "resources": [{"name": name, "singularName": "", "namespaced": nsd, "kind": kind, "verbs": verbs}
                              for name, kind, nsd, verbs in vres]})

    def _agg_version(self, group: str, version: str) -> dict[str, Any]:
        rts = sorted(self.registry.in_group_version(group, version), key=lambda r: r.plural)
        return {"version": version, "freshness": "Current", "resources": [_rt_disc(rt) for rt in rts]}

    def _legacy_group(self, g: str) -> dict[str, Any]:
        versions = self.registry.groups.get(g) or [VIRTUAL_GROUPS[g][0]]
        vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
        return {"name": g, "versions": vs, "preferredVersion": vs[0]}

    @staticmethod
    def _wants_aggregated(request: web.Request) -> str | None:
        acc = request.headers.get("Accept", "")
        for part in acc.split(","):
            p = part.replace(" ", "")
            if "as=APIGroupDiscoveryList" in p and "g=apidiscovery.k8s.io" in p:
                if "v=v2beta1" in p:
                    return AGG_V2BETA1
                if "v=v2" in p:
                    return AGG_V2
            elif p.startswith(("application/json", "*/*")):
                return None
        return None

    def _agg(self, ct: str, body: bytes) -> web.Response:
        if ct == AGG_V2BETA1:
            body = body.replace(b'"apidiscovery.k8s.io/v2"', b'"apidiscovery.k8s.io/v2beta1"')
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ct
        resp.headers["Vary"] = "Accept"
        return resp

    def api_root(self, request: web.Request) -> web.Response:
        ct = self._wants_aggregated(request)
        if ct:
            return self._agg(ct, self.agg_api)
        return web.Response(body=self.legacy_api, content_type="application/json", headers={"Vary": "Accept"})

    def apis_root(self, request: web.Request) -> web.Response:
        ct = self._wants_aggregated(request)
        if ct:
            return self._agg(ct, self.agg_apis)
        return web.Response(body=self.legacy_apis, content_type="application/json", headers={"Vary": "Accept"})

    def group(self, group: str) -> web.Response:
        g = self.legacy_groups.get(group)
        if g is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return web.Response(body=msgspec.json.encode({"kind": "APIGroup", "apiVersion": "v1", **g}),
                            content_type="application/json")

    def resource_list(self, group: str, version: str) -> web.Response:
        body = self.resource_lists.get((group, version))
        if body is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return web.Response(body=body, content_type="application/json")
