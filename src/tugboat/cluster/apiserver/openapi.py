"""OpenAPI v3 documents generated from ``schemas.json``: the index and one document per
group/version, with what ``kubectl apply --validate=strict`` (a PATCH operation carrying
``x-kubernetes-group-version-kind`` and a ``fieldValidation`` parameter) and ``kubectl explain``
(component schemas tagged with their GVK) read. ``/openapi/v2`` answers 404, which kubectl accepts.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.schema import definitions

if TYPE_CHECKING:
    from tugboat.cluster.apiserver.server import APIServer

_docs: dict[str, tuple[bytes, str]] = {}


def _type(t: str) -> dict[str, Any]:
    if t.startswith("ref:"):
        return {"allOf": [{"$ref": f"#/components/schemas/{t[4:]}"}], "default": {}}
    if t.startswith("list:"):
        return {"type": "array", "items": _type(t[5:])}
    if t.startswith("map:"):
        return {"type": "object", "additionalProperties": _type(t[4:])}
    if t == "date-time":
        return {"type": "string", "format": "date-time"}
    if t == "int-or-string":
        return {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    if t == "any":
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {"type": t}


def _collect(name: str, defs: dict[str, Any], acc: dict[str, Any]) -> None:
    if name in acc or name not in defs:
        return
    d = defs[name]
    schema: dict[str, Any] = {"type": "object", "description": name.rsplit(".", 1)[-1],
                              "properties": {k: _type(v) for k, v in d["p"].items()}}
    acc[name] = schema
    for v in d["p"].values():
        t = v
        while t.startswith(("list:", "map:")):
            t = t.split(":", 1)[1]
        if t.startswith("ref:"):
            _collect(t[4:], defs, acc)


def _gv_doc(srv: APIServer, group: str, version: str) -> dict[str, Any]:
    defs = definitions()
    comps: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    fv = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
          "description": "fieldValidation instructs the server on how to handle objects in the request "
                         "containing unknown or duplicate fields: Ignore, Warn or Strict."}
    dry = {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    fm = {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for rt in srv.registry.in_group_version(group, version):
        gvk = [{"group": group, "version": version, "kind": rt.kind}]
        ref = {"$ref": f"#/components/schemas/{rt.schema_name}"}
        if rt.schema_name in defs:
            _collect(rt.schema_name, defs, comps)
            comps[rt.schema_name]["x-kubernetes-group-version-kind"] = gvk
            comps[rt.schema_name]["description"] = f"{rt.kind} ({rt.api_version})"
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        body = {"content": {"*/*": {"schema": ref}}, "required": True}
        patch_body = {"content": {ct: {"schema": {"type": "object"}} for ct in (
            "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")},
            "required": True}
        coll = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        item = coll + "/{name}"
        base = {"x-kubernetes-group-version-kind": gvk[0]}
        paths[coll] = {
            "get": {**base, "operationId": f"list{rt.kind}", "x-kubernetes-action": "list", "responses": ok},
            "post": {**base, "operationId": f"create{rt.kind}", "x-kubernetes-action": "post",
                     "parameters": [fv, dry, fm], "requestBody": body, "responses": ok},
        }
        paths[item] = {
            "get": {**base, "operationId": f"read{rt.kind}", "x-kubernetes-action": "get", "responses": ok},
            "put": {**base, "operationId": f"replace{rt.kind}", "x-kubernetes-action": "put",
                    "parameters": [fv, dry, fm], "requestBody": body, "responses": ok},
            "patch": {**base, "operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                      "parameters": [fv, dry, fm, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                      "requestBody": patch_body, "responses": ok},
            "delete": {**base, "operationId": f"delete{rt.kind}", "x-kubernetes-action": "delete",
                       "responses": {"200": {"description": "OK"}}},
        }
        if rt.namespaced:
            paths[f"{prefix}/{rt.plural}"] = {"get": {**base, "operationId": f"list{rt.kind}ForAllNamespaces",
                                                      "x-kubernetes-action": "list", "responses": ok}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": comps}}


def _doc(srv: APIServer, gv: str) -> tuple[bytes, str]:
    hit = _docs.get(gv)
    if hit is None:
        group, _, version = gv.rpartition("/")
        group = "" if gv.startswith("api/") else group.split("/", 1)[1]
        body = msgspec.json.encode(_gv_doc(srv, group, version))
        hit = _docs[gv] = (body, hashlib.sha512(body).hexdigest()[:64].upper())
    return hit


def _gvs(srv: APIServer) -> list[str]:
    out = []
    for g, versions in srv.registry.groups.items():
        for v in versions:
            out.append(f"apis/{g}/{v}" if g else f"api/{v}")
    return out


async def handle(srv: APIServer, request: web.Request, parts: list[str]) -> web.Response:
    if len(parts) >= 2 and parts[1] == "v2":
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    if parts[:2] != ["openapi", "v3"]:
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    if len(parts) == 2:
        index = {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_doc(srv, gv)[1]}"} for gv in _gvs(srv)}}
        return web.Response(body=msgspec.json.encode(index), content_type="application/json")
    gv = "/".join(parts[2:])
    if gv not in _gvs(srv):
        raise ApiError(404, "the server could not find the requested resource", "NotFound")
    body, h = _doc(srv, gv)
    headers = {"Etag": f'"{h}"'}
    if request.query.get("hash") == h:
        headers["Cache-Control"] = "public, immutable"
    return web.Response(body=body, content_type="application/json", headers=headers)
