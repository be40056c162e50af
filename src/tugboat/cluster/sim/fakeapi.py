"""A small in-memory Kubernetes API server for testing and benchmarking control-plane components.

It is NOT the tugboat API server (``tugboat.cluster.apiserver``); it implements just the slice of
the REST semantics the scheduler, controllers and simulated nodes rely on, over plain HTTP, so
they can be developed and measured in isolation: list (label/field selectors, resourceVersion),
watch (from a resourceVersion, 410 when too old, bookmarks), get/create/update/patch (merge,
strategic treated as merge, JSON patch not supported)/delete (finalizers, deletionTimestamp,
propagationPolicy, graceful pod deletion once bound), status/scale/binding/finalize
subresources, metadata.generation, generateName, uid, and metrics.k8s.io fed by PUTs.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime as _dt
import uuid
from typing import Any

import msgspec
from aiohttp import web

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.util import rand_suffix
from tugboat.cluster.sim.selectors import parse_field_selector, parse_label_selector

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode

_PLURALS: dict[tuple[str, str], R.Resource] = {}
for _r in [*R.ALL, R.POD_METRICS, R.NODE_METRICS]:
    _PLURALS[(_r.api_version, _r.plural)] = _r
_NO_STATUS_RESET = {"Node", "PersistentVolume", "Event", "Lease", "PodMetrics", "NodeMetrics"}
_SCALABLE = {"Deployment", "ReplicaSet", "StatefulSet"}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list) and v and all(
            isinstance(x, dict) and "name" in x for x in v
        ) and all(isinstance(x, dict) and "name" in x for x in out[k]):
            # strategic merge by name (containers, env, volumes ...)
            cur = {x["name"]: x for x in out[k]}
            for x in v:
                cur[x["name"]] = merge_patch(cur.get(x["name"], {}), x)
            out[k] = list(cur.values())
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class Status(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


class FakeApiServer:
    def __init__(self, *, history: int = 200_000) -> None:
        self.objects: dict[R.Resource, dict[tuple[str, str], dict]] = collections.defaultdict(dict)
        self.rv = 1
        self.log: collections.deque[tuple[int, R.Resource, str, dict]] = collections.deque(maxlen=history)
        self.watchers: list[tuple[R.Resource, str | None, Any, Any, asyncio.Queue]] = []
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""
        for ns in ("default", "kube-system", "kube-node-lease", "kube-public"):
            self._store_create(R.NAMESPACES, {"metadata": {"name": ns}})

    # ---- storage
    def _emit(self, res: R.Resource, typ: str, obj: dict) -> None:
        self.log.append((self.rv, res, typ, obj))
        for wres, ns, lsel, fsel, q in self.watchers:
            if wres is res and (ns is None or obj["metadata"].get("namespace") == ns) and self._match(obj, lsel, fsel):
                q.put_nowait((typ, obj))

    @staticmethod
    def _match(obj: dict, lsel: Any, fsel: Any) -> bool:
        return lsel(obj["metadata"].get("labels") or {}) and fsel(obj)

    def _store_create(self, res: R.Resource, obj: dict, ns: str | None = None) -> dict:
        md = obj.setdefault("metadata", {})
        if res.namespaced:
            md["namespace"] = ns or md.get("namespace") or "default"
        else:
            md.pop("namespace", None)
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + rand_suffix()
            else:
                raise Status(422, "Invalid", f"{res.kind} \"\" is invalid: metadata.name: Required value: name or generateName is required")
        k = (md.get("namespace") or "", md["name"])
        if k in self.objects[res]:
            raise Status(409, "AlreadyExists", f"{res.plural} \"{md['name']}\" already exists")
        if res.namespaced and ("", md["namespace"]) not in self.objects[R.NAMESPACES]:
            raise Status(404, "NotFound", f"namespaces \"{md['namespace']}\" not found")
        if res.namespaced and self.objects[R.NAMESPACES][("", md["namespace"])]["metadata"].get("deletionTimestamp"):
            raise Status(403, "Forbidden", f"unable to create new content in namespace {md['namespace']} because it is being terminated")
        self.rv += 1
        md["uid"] = str(uuid.uuid4())
        md["resourceVersion"] = str(self.rv)
        md["creationTimestamp"] = _now()
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if "spec" in obj or res.kind in _SCALABLE:
            md["generation"] = 1
        if res.kind not in _NO_STATUS_RESET:
            obj["status"] = {}
        if res is R.PODS:
            obj["status"] = {"phase": "Pending"}
            obj.setdefault("spec", {}).setdefault("schedulerName", "default-scheduler")
        if res is R.NAMESPACES:
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        self.objects[res][k] = obj
        self._emit(res, "ADDED", obj)
        return obj

    def _get(self, res: R.Resource, ns: str | None, name: str) -> dict:
        obj = self.objects[res].get((ns or "" if res.namespaced else "", name))
        if obj is None:
            gr = res.plural + (f".{res.group}" if res.group else "")
            raise Status(404, "NotFound", f"{gr} \"{name}\" not found")
        return obj

    def _store_update(self, res: R.Resource, new: dict, *, check_rv: bool = True, sub: str | None = None) -> dict:
        md = new["metadata"]
        old = self._get(res, md.get("namespace"), md["name"])
        if check_rv and md.get("resourceVersion") and md["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise Status(409, "Conflict", f"Operation cannot be fulfilled on {res.plural} \"{md['name']}\": the object has been modified; please apply your changes to the latest version and try again")
        if md.get("uid") and md["uid"] != old["metadata"]["uid"]:
            raise Status(409, "Conflict", "Precondition failed: UID in precondition")
        out = copy.deepcopy(old) if sub == "status" else new
        if sub == "status":
            out["status"] = new.get("status") or {}
        else:
            for f in ("uid", "creationTimestamp", "deletionTimestamp", "namespace", "generation"):
                if f in old["metadata"]:
                    out["metadata"][f] = old["metadata"][f]
                else:
                    out["metadata"].pop(f, None)
            if res.kind not in _NO_STATUS_RESET and res is not R.NAMESPACES:
                out["status"] = old.get("status", {})
            if res is R.PODS and old.get("spec", {}).get("nodeName"):
                out.setdefault("spec", {})["nodeName"] = old["spec"]["nodeName"]
            if "generation" in old["metadata"] and old.get("spec") != out.get("spec"):
                out["metadata"]["generation"] = old["metadata"]["generation"] + 1
        out["apiVersion"], out["kind"] = res.api_version, res.kind
        def strip(o: dict) -> bytes:
            return _enc({**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}})

        if strip(out) == strip(old):
            return old
        self.rv += 1
        out["metadata"]["resourceVersion"] = str(self.rv)
        k = (out["metadata"].get("namespace") or "", out["metadata"]["name"])
        if out["metadata"].get("deletionTimestamp") and not out["metadata"].get("finalizers") and not (
            res is R.NAMESPACES and (out.get("spec") or {}).get("finalizers")
        ) and not (res is R.PODS and old["metadata"].get("deletionGracePeriodSeconds")):
            del self.objects[res][k]
            self._emit(res, "DELETED", out)
            return out
        self.objects[res][k] = out
        self._emit(res, "MODIFIED", out)
        return out

    def _store_delete(self, res: R.Resource, ns: str | None, name: str, opts: dict) -> dict:
        obj = self._get(res, ns, name)
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise Status(409, "Conflict", "Precondition failed: UID in precondition")
        md = copy.deepcopy(obj["metadata"])
        prop = opts.get("propagationPolicy")
        fins = list(md.get("finalizers") or [])
        if prop == "Foreground" and "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
        if prop == "Orphan" and "orphan" not in fins:
            fins.append("orphan")
        grace = opts.get("gracePeriodSeconds")
        graceful = res is R.PODS and obj.get("spec", {}).get("nodeName") and grace != 0 and not md.get("deletionTimestamp")
        if fins or res is R.NAMESPACES or graceful:
            if md.get("deletionTimestamp") and not graceful and res is not R.PODS:
                return obj
            new = copy.deepcopy(obj)
            md.setdefault("deletionTimestamp", _now())
            md["finalizers"] = fins
            if graceful:
                md["deletionGracePeriodSeconds"] = 30 if grace is None else grace
            elif res is R.PODS:
                md.pop("deletionGracePeriodSeconds", None)
            if not fins:
                md.pop("finalizers")
            new["metadata"] = md
            if res is R.NAMESPACES:
                new["status"] = {"phase": "Terminating"}
            if res is R.PODS and not graceful and not fins:
                del self.objects[res][(ns or "", name)]
                self.rv += 1
                new["metadata"]["resourceVersion"] = str(self.rv)
                self._emit(res, "DELETED", new)
                return new
            self.rv += 1
            md["resourceVersion"] = str(self.rv)
            self.objects[res][(md.get("namespace") or "", name)] = new
            self._emit(res, "MODIFIED", new)
            return new
        del self.objects[res][(md.get("namespace") or "", name)]
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(res, "DELETED", obj)
        return obj

    # ---- HTTP
    def _route(self, path: str) -> tuple[R.Resource, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            gv, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise Status(404, "NotFound", "the server could not find the requested resource")
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (gv, rest[2]) in _PLURALS:
            ns, rest = rest[1], rest[2:]
        if not rest or (gv, rest[0]) not in _PLURALS:
            raise Status(404, "NotFound", "the server could not find the requested resource")
        res = _PLURALS[(gv, rest[0])]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return res, ns, name, sub

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        try:
            if request.path == "/version":
                return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"})
            res, ns, name, sub = self._route(request.path)
            body = None
            if request.can_read_body:
                raw = await request.read()
                body = _dec(raw) if raw else None
            return await self._dispatch(request, res, ns, name, sub, body)
        except Status as st:
            return web.Response(body=_enc(st.body()), status=st.code, content_type="application/json")

    def _json(self, obj: Any, status: int = 200) -> web.Response:
        return web.Response(body=_enc(obj), status=status, content_type="application/json")

    async def _dispatch(self, request: web.Request, res: R.Resource, ns: str | None, name: str | None,
                        sub: str | None, body: Any) -> web.StreamResponse:
        m, q = request.method, request.query
        if name is None:
            if m == "GET":
                if q.get("watch", "").lower() in ("true", "1"):
                    return await self._watch(request, res, ns)
                lsel = parse_label_selector(q.get("labelSelector"))
                fsel = parse_field_selector(q.get("fieldSelector"))
                items = [o for (ons, _), o in self.objects[res].items()
                         if (ns is None or ons == ns) and self._match(o, lsel, fsel)]
                return self._json({"kind": res.kind + "List", "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(self.rv)}, "items": items})
            if m == "POST":
                if not isinstance(body, dict):
                    raise Status(400, "BadRequest", "body required")
                return self._json(self._store_create(res, copy.deepcopy(body), ns), 201)
            raise Status(405, "MethodNotAllowed", "method not allowed")
        if sub == "binding" and m == "POST":
            pod = self._get(res, ns, name)
            if pod.get("spec", {}).get("nodeName"):
                raise Status(409, "Conflict", f"pod {name} is already assigned to node \"{pod['spec']['nodeName']}\"")
            uid = (body.get("metadata") or {}).get("uid")
            if uid and uid != pod["metadata"]["uid"]:
                raise Status(409, "Conflict", "Precondition failed: UID in precondition")
            new = copy.deepcopy(pod)
            new["spec"]["nodeName"] = body["target"]["name"]
            conds = [c for c in new["status"].get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()})
            new["status"]["conditions"] = conds
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[res][(ns or "", name)] = new
            self._emit(res, "MODIFIED", new)
            return self._json({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}, 201)
        if sub == "scale" and res.kind in _SCALABLE:
            obj = self._get(res, ns, name)
            if m in ("PUT", "PATCH"):
                reps = ((body or {}).get("spec") or {}).get("replicas")
                if reps is not None:
                    new = copy.deepcopy(obj)
                    new["spec"]["replicas"] = reps
                    new["metadata"].pop("resourceVersion", None)
                    obj = self._store_update(res, new, check_rv=False)
            sel = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
            return self._json({"kind": "Scale", "apiVersion": "autoscaling/v1",
                               "metadata": {"name": name, "namespace": ns, "resourceVersion": obj["metadata"]["resourceVersion"]},
                               "spec": {"replicas": obj["spec"].get("replicas", 1)},
                               "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                                          "selector": ",".join(f"{k}={v}" for k, v in sel.items())}})
        if m == "GET":
            return self._json(self._get(res, ns, name))
        if m == "PUT":
            if not isinstance(body, dict):
                raise Status(400, "BadRequest", "body required")
            body = copy.deepcopy(body)
            body.setdefault("metadata", {})["name"] = name
            if res.namespaced:
                body["metadata"]["namespace"] = ns
            if sub == "finalize" and res is R.NAMESPACES:
                cur = copy.deepcopy(self._get(res, ns, name))
                cur["spec"] = body.get("spec") or {}
                return self._json(self._store_update(res, cur, check_rv=False))
            if (res.kind in ("PodMetrics", "NodeMetrics", "Lease") and
                    (ns or "" if res.namespaced else "", name) not in self.objects[res]):
                return self._json(self._store_create(res, body, ns), 201)
            return self._json(self._store_update(res, body, sub=sub))
        if m == "PATCH":
            cur = self._get(res, ns, name)
            ctype = request.content_type
            if ctype == "application/json-patch+json":
                raise Status(415, "UnsupportedMediaType", "json patch not supported by the fake server")
            new = merge_patch(copy.deepcopy(cur), body or {})
            new["metadata"]["resourceVersion"] = (body or {}).get("metadata", {}).get("resourceVersion") or cur["metadata"]["resourceVersion"]
            return self._json(self._store_update(res, new, sub=sub))
        if m == "DELETE":
            opts = dict(body or {})
            for k in ("propagationPolicy", "gracePeriodSeconds"):
                if k in request.query:
                    opts[k] = int(request.query[k]) if k == "gracePeriodSeconds" else request.query[k]
            obj = self._store_delete(res, ns, name, opts)
            return self._json(obj)
        raise Status(405, "MethodNotAllowed", "method not allowed")

    async def _watch(self, request: web.Request, res: R.Resource, ns: str | None) -> web.StreamResponse:
        q = request.query
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        rv = q.get("resourceVersion")
        timeout = float(q.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        if rv in (None, "", "0"):
            for (ons, _), o in self.objects[res].items():
                if (ns is None or ons == ns) and self._match(o, lsel, fsel):
                    queue.put_nowait(("ADDED", o))
        else:
            start = int(rv)
            oldest = self.log[0][0] if self.log else self.rv
            if start < oldest - 1 and self.rv > start:
                err = Status(410, "Expired", f"too old resource version: {start} ({oldest})").body()
                await resp.write(_enc({"type": "ERROR", "object": err}) + b"\n")
                return resp
            for erv, eres, typ, o in self.log:
                if erv > start and eres is res and (ns is None or o["metadata"].get("namespace") == ns) and self._match(o, lsel, fsel):
                    queue.put_nowait((typ, o))
        entry = (res, ns, lsel, fsel, queue)
        self.watchers.append(entry)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    typ, o = await asyncio.wait_for(queue.get(), min(left, 5.0))
                except TimeoutError:
                    if q.get("allowWatchBookmarks") == "true":
                        await resp.write(_enc({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": str(self.rv)}}}) + b"\n")
                    continue
                chunk = [_enc({"type": typ, "object": o})]
                while not queue.empty() and len(chunk) < 500:
                    typ, o = queue.get_nowait()
                    chunk.append(_enc({"type": typ, "object": o}))
                await resp.write(b"\n".join(chunk) + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(entry)
        return resp

    # ---- lifecycle
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def write_kubeconfig(self, path: str) -> str:
        import yaml

        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
               "users": [{"name": "fake", "user": {}}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return path


def main(argv: list[str] | None = None) -> int:
    """``python -m tugboat.cluster.sim.fakeapi --kubeconfig F [--port N]``: serve until killed."""
    import argparse

    ap = argparse.ArgumentParser(prog="fakeapi")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    async def run() -> None:
        srv = FakeApiServer()
        await srv.start(port=args.port)
        srv.write_kubeconfig(args.kubeconfig + ".tmp")
        import os

        os.replace(args.kubeconfig + ".tmp", args.kubeconfig)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
