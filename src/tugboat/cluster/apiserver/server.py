"""The Kubernetes API server: aiohttp over TLS, one catch-all router, the generic handlers.

Entry points: :func:`make_app` (an ``aiohttp.web.Application`` over a started store) and
:func:`serve` (what ``tug cluster apiserver`` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from typing import Any

import msgspec
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from tugboat.cluster.apiserver import discovery, meta
from tugboat.cluster.apiserver import serviceaccounts as sa_tokens
from tugboat.cluster.apiserver.handlers import ObjectService, Selector, encode, load
from tugboat.cluster.apiserver.kinds import REGISTRY
from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from tugboat.cluster.apiserver.registry import Obj, Registry, ResourceType
from tugboat.cluster.apiserver.serviceaccounts import TokenIssuer
from tugboat.cluster.apiserver.storage.base import Store, StoreUnavailable
from tugboat.cluster.apiserver.watchcache import CachedEvent, TooOld, WatchCache
from tugboat.util.net import peer_identity

log = logging.getLogger(__name__)
MAX_BODY = 3 * 1024 * 1024
K8S_MINOR = os.environ.get("TUG_K8S_MINOR", "32")
K8S_VERSION = f"v1.{K8S_MINOR}.0"
JSON = "application/json"
_dec = msgspec.json.Decoder()

APP_KEY: web.AppKey[APIServer] = web.AppKey("apiserver")
_MISSING: Any = object()


class User:
    def __init__(self, name: str, groups: list[str], extra: dict[str, list[str]] | None = None) -> None:
        self.name = name
        self.groups = groups
        self.extra = extra or {}


def bearer_token(request: web.BaseRequest) -> str:
    """The token of an ``Authorization: Bearer`` header (the scheme case-insensitive, as kube's)."""
    scheme, _, tok = request.headers.get("Authorization", "").strip().partition(" ")
    return tok.strip() if scheme.lower() == "bearer" else ""


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type=JSON, headers=headers)


def status_success(rt: ResourceType, obj: Obj) -> Obj:
    md = obj.get("metadata") or {}
    d: dict[str, Any] = {"name": md.get("name"), "kind": rt.plural, "uid": md.get("uid")}
    if rt.group:
        d["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}


def _accepts(request: web.Request) -> dict[str, bool]:
    acc = request.headers.get("Accept", "")
    out = {"table": False, "partial": False, "json": True}
    for part in acc.split(","):
        p = part.replace(" ", "")
        if "as=Table" in p and "g=meta.k8s.io" in p:
            out["table"] = True
            break
        if "as=PartialObjectMetadata" in p:
            out["partial"] = True
            break
        if p.startswith((JSON, "*/*", "application/*")) or p.startswith("application/yaml"):
            break
    else:
        if acc and "protobuf" in acc and JSON not in acc and "*/*" not in acc:
            raise ApiError(406, "only the following media types are accepted: application/json, application/yaml, "
                           "application/json;as=Table;v=v1;g=meta.k8s.io", "NotAcceptable")
    return out


class APIServer:
    def __init__(self, store: Store, *, registry: Registry = REGISTRY, tokens: dict[str, tuple[str, list[str]]] | None = None,
                 require_auth: bool = True, data_dir: str | None = None, sa_issuer: TokenIssuer | None = None) -> None:
        self.store = store
        self.registry = registry
        self.cache = WatchCache(store)
        self.objects = ObjectService(store, registry, self.cache)
        self.tokens = tokens or {}
        self.require_auth = require_auth
        self.data_dir = data_dir
        # service account tokens: the cluster's signing key (serve()), or one of this process's own
        self.sa_issuer = sa_issuer or TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
        self.discovery = discovery.Discovery(registry)
        from tugboat.cluster.apiserver.metrics import MetricsStore
        self.metrics = MetricsStore()
        self._bg: list[asyncio.Task[Any]] = []

    # --- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.cache.start()
        res = await self.store.list("/registry/core/namespaces/")
        for kv in res.items:
            o = _dec.decode(kv.value)
            self.objects.namespaces[o["metadata"]["name"]] = (o.get("status") or {}).get("phase", "Active")
        self._bg.append(asyncio.create_task(self._follow_namespaces()))
        res = await self.store.list("/registry/scheduling.k8s.io/priorityclasses/")
        for kv in res.items:
            o = load(kv)
            self.objects.priority_classes[o["metadata"]["name"]] = o
        self._bg.append(asyncio.create_task(self._follow_priority_classes()))
        self._bg.append(asyncio.create_task(self._forget_metrics_of_deleted()))
        await self._bootstrap()
        self._bg.append(asyncio.create_task(self._compactor()))
        self._bg.append(asyncio.create_task(self._expire_events()))

    async def stop(self) -> None:
        for t in self._bg:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.cache.stop()

    async def _follow_namespaces(self) -> None:
        w = self.cache.watch("/registry/core/namespaces/", self.cache.rev)
        sa = self.registry.get("", "v1", "serviceaccounts")
        assert sa is not None
        while True:
            ev = await w.queue.get()
            if ev is None:
                w = self.cache.watch("/registry/core/namespaces/", self.cache.rev)
                continue
            name = ev.obj["metadata"]["name"]
            if ev.type == "DELETED":
                self.objects.namespaces.pop(name, None)
                continue
            self.objects.namespaces[name] = (ev.obj.get("status") or {}).get("phase", "Active")
            if ev.type == "ADDED":
                # the service account controller's job, done here: every namespace has "default"
                with contextlib.suppress(ApiError):
                    await self.objects.create(sa, name, {"metadata": {"name": "default"}})

    async def _follow_priority_classes(self) -> None:
        """Keep ObjectService.priority_classes current (the Priority admission's globalDefault lookup)."""
        prefix = "/registry/scheduling.k8s.io/priorityclasses/"
        w = self.cache.watch(prefix, self.cache.rev)
        while True:
            ev = await w.queue.get()
            if ev is None:
                w = self.cache.watch(prefix, self.cache.rev)
                res = await self.store.list(prefix)
                self.objects.priority_classes = {o["metadata"]["name"]: o for o in (load(kv) for kv in res.items)}
                continue
            name = ev.obj["metadata"]["name"]
            if ev.type == "DELETED":
                self.objects.priority_classes.pop(name, None)
            else:
                self.objects.priority_classes[name] = ev.obj

    async def _forget_metrics_of_deleted(self) -> None:
        """Metrics of deleted pods and nodes disappear with them (not only after the TTL)."""

        def sink(ev: CachedEvent) -> bool:
            if ev.type == "DELETED":
                parts = ev.key.split("/")  # /registry/core/pods/NS/NAME or /registry/core/nodes/NAME
                if parts[3] == "pods" and len(parts) == 6:
                    self.metrics.forget_pod(parts[4], parts[5])
                elif parts[3] == "nodes" and len(parts) == 5:
                    self.metrics.forget_node(parts[4])
            return True

        while True:
            watchers = [self.cache.watch(p, self.cache.rev, sink)
                        for p in ("/registry/core/pods/", "/registry/core/nodes/")]
            await asyncio.wait([asyncio.create_task(w.done.wait()) for w in watchers],
                               return_when=asyncio.FIRST_COMPLETED)
            for w in watchers:
                w.close()

    async def _bootstrap(self) -> None:
        ns = self.registry.get("", "v1", "namespaces")
        svc = self.registry.get("", "v1", "services")
        assert ns is not None and svc is not None
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            with contextlib.suppress(ApiError):
                await self.objects.create(ns, None, {"metadata": {"name": name}})
        pc = self.registry.get("scheduling.k8s.io", "v1", "priorityclasses")
        assert pc is not None
        from tugboat.cluster.apiserver.kinds import SYSTEM_PRIORITY_CLASSES
        for name, (value, desc) in SYSTEM_PRIORITY_CLASSES.items():
            with contextlib.suppress(ApiError):
                await self.objects.create(pc, None, {"metadata": {"name": name}, "value": value,
                                                     "description": desc})
        with contextlib.suppress(ApiError):
            await self.objects.create(svc, "default", {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}})

    event_ttl = 3600.0  # kube-apiserver's --event-ttl default

    async def _expire_events(self, interval: float = 60.0) -> None:
        """Events live one hour (kube-apiserver keeps them in etcd with a lease of --event-ttl)."""
        rt = self.registry.get("", "v1", "events")
        assert rt is not None
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_events_once(rt)
            except Exception:
                log.exception("event expiry failed")

    async def expire_events_once(self, rt: ResourceType) -> int:
        cutoff = time.time() - self.event_ttl
        res = await self.store.list(rt.key_prefix(None))
        n = 0
        for kv in res.items:
            ev = _dec.decode(kv.value)
            md = ev.get("metadata") or {}
            last = meta.parse_time(ev.get("lastTimestamp") or ev.get("eventTime") or md.get("creationTimestamp"))
            if last is not None and last < cutoff:
                with contextlib.suppress(Exception):
                    await self.store.delete(kv.key, kv.mod_revision)
                    n += 1
        return n

    async def _compactor(self, interval: float = 300.0, keep: int = 10000) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                rev = await self.store.current_revision()
                if rev - keep > await self.store.compact_revision():
                    await self.store.compact(rev - keep)
            except Exception:
                log.exception("compaction failed")

    # --- auth ------------------------------------------------------------------------------------
    def authenticate(self, request: web.Request) -> User | None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        who = peer_identity(peer)
        if who is not None:
            return User(*who)
        tok = bearer_token(request)
        if tok:
            hit = self.tokens.get(tok)
            if hit:
                return User(hit[0], hit[1])
        return None

    async def authenticate_service_account(self, request: web.Request) -> User | None:
        """A bearer service account token (a JWT we signed, its ServiceAccount and bound pod alive)."""
        tok = bearer_token(request)
        if not sa_tokens.looks_like_jwt(tok):
            return None
        try:
            ident = await sa_tokens.authenticate(self.objects, self.sa_issuer, tok)
        except sa_tokens.InvalidToken as exc:
            log.info("service account token rejected: %s", exc)
            return None
        return User(ident.name, ident.groups, ident.extra)

    # --- app -------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """An ``aiohttp.web.Application`` (for embedding and aiohttp's test client)."""
        app = web.Application(client_max_size=MAX_BODY + 1024, middlewares=[self._middleware])
        app[APP_KEY] = self
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    def make_server(self, **kwargs: Any) -> web.Server:
        """The low-level server ``serve()`` runs: no router or middleware chain per request (all
        paths go to :meth:`handle`, which routes itself), which saves a good part of the per-request
        overhead."""

        def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                                   client_max_size=MAX_BODY + 1024)

        return web.Server(self.handle, request_factory=factory, **kwargs)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._guarded(request, self.dispatch)  # type: ignore[arg-type]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        return await self._guarded(request, handler)

    # kube-apiserver's --max-requests-inflight / --max-mutating-requests-inflight (watches and
    # long-running requests are not counted): beyond them, 429 with Retry-After, which clients retry
    max_inflight = 400
    max_mutating_inflight = 200
    _inflight = 0
    _mutating_inflight = 0

    async def _guarded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        mutating = request.method in ("POST", "PUT", "PATCH", "DELETE")
        counted = False
        try:
            if path not in ("/healthz", "/livez", "/readyz") and self.require_auth:
                user = self.authenticate(request) or await self.authenticate_service_account(request)
                if user is None:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
            long_running = request.query.get("watch") in ("1", "true", "True") or "/watch/" in path or \
                path.endswith(("/log", "/exec", "/attach", "/portforward"))
            if not long_running:
                if (mutating and self._mutating_inflight >= self.max_mutating_inflight) or \
                        (not mutating and self._inflight >= self.max_inflight):
                    e = ApiError(429, "Too many requests, please try again later.", "TooManyRequests",
                                 {"retryAfterSeconds": 1})
                    return json_response(e.status(), 429, headers={"Retry-After": "1"})
                counted = True
                if mutating:
                    self._mutating_inflight += 1
                else:
                    self._inflight += 1
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except StoreUnavailable as exc:
            e = ApiError(503, f"the datastore is unavailable: {exc}", "ServiceUnavailable")
            return json_response(e.status(), 503, headers={"Retry-After": "1"})
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("internal error on %s %s", request.method, path)
            e = ApiError(500, f"Internal error occurred: {type(exc).__name__}: {exc}", "InternalError")
            return json_response(e.status(), 500)
        finally:
            if counted:
                if mutating:
                    self._mutating_inflight -= 1
                else:
                    self._inflight -= 1

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok")
        if path == "/version":
            return json_response({"major": "1", "minor": K8S_MINOR, "gitVersion": K8S_VERSION,
                                  "gitCommit": "tugboat", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                  "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"})
        if path == "/.well-known/openid-configuration":
            return json_response(sa_tokens.openid_configuration(self.sa_issuer, f"https://{request.host}"))
        if path == "/openid/v1/jwks":
            return web.Response(body=encode(sa_tokens.jwks(self.sa_issuer)), content_type="application/jwk-set+json")
        parts = [p for p in path.split("/") if p]
        if parts[0] == "openapi":
            from tugboat.cluster.apiserver import openapi
            return await openapi.handle(self, request, parts)
        if parts[0] == "api":
            if len(parts) == 1:
                return self.discovery.api_root(request)
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return self.discovery.apis_root(request)
            if len(parts) == 2:
                return self.discovery.group(parts[1])
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
        if group == "metrics.k8s.io":
            return await self.metrics.handle(self, request, version, rest)
        if group == "authentication.k8s.io":
            return await self.self_subject_review(request, version, rest)
        if not rest:
            return self.discovery.resource_list(group, version)
        return await self.resource_request(request, group, version, rest)

    async def self_subject_review(self, request: web.Request, version: str, rest: list[str]) -> web.Response:
        """``kubectl auth whoami``: who the request's credentials say the caller is; and TokenReview."""
        if version != "v1":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if not rest:
            return self.discovery.resource_list("authentication.k8s.io", "v1")
        if rest == ["tokenreviews"] and request.method == "POST":
            body = await self.read_body(request)
            return json_response(await sa_tokens.token_review(self.objects, self.sa_issuer, self.tokens,
                                                              self._parse(request, body)), 201)
        if rest != ["selfsubjectreviews"] or request.method != "POST":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        await self.read_body(request)
        user = self.authenticate(request) or await self.authenticate_service_account(request) or \
            User("system:anonymous", ["system:unauthenticated"])
        groups = [*user.groups, "system:authenticated"] if user.name != "system:anonymous" else user.groups
        info: dict[str, Any] = {"username": user.name, "groups": groups}
        if user.extra:
            info["extra"] = user.extra
        return json_response({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                              "metadata": {"creationTimestamp": meta.now_rfc3339()},
                              "status": {"userInfo": info}}, 201)

    # --- routing to a resource -------------------------------------------------------------------
    def _resolve(self, group: str, version: str, rest: list[str]) -> tuple[ResourceType, str | None, str | None, str | None]:
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) == 3 and rest[2] in ("status", "finalize") and group == "":
            pass  # a namespace's own subresource
        elif rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        rt = self.registry.get(group, version, plural)
        if rt is None:
            if group == "" and version == "v1" and plural == "bindings" and ns:
                rt = self.registry.get("", "v1", "pods")
                assert rt is not None
                return rt, ns, None, "binding"
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if rt.namespaced and ns is None and name is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if not rt.namespaced and ns is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return rt, ns, name, sub

    async def resource_request(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        legacy_watch = rest[0] == "watch" and len(rest) > 1  # deprecated /watch/… paths
        if legacy_watch:
            rest = rest[1:]
        rt, ns, name, sub = self._resolve(group, version, rest)
        m = request.method
        q = request.query
        if legacy_watch:
            if m != "GET" or sub is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource",
                               "MethodNotAllowed")
            if name is not None:
                request = request.clone(rel_url=request.rel_url.update_query(
                    {"fieldSelector": f"metadata.name={name}"}))
            return await self.watch(request, rt, ns)
        if sub in ("log", "exec", "attach", "portforward", "proxy"):
            from tugboat.cluster.apiserver import nodeproxy
            return await nodeproxy.handle(self, request, rt, ns or "", name or "", sub)
        if name is None:
            if sub == "binding" and m == "POST":
                body = await self.read_body(request)
                return await self._binding(rt, ns or "", None, body, request)
            if m == "GET":
                if meta.parse_bool(q.get("watch")):
                    return await self.watch(request, rt, ns)
                return await self.list(request, rt, ns)
            if m == "POST":
                body = await self.read_body(request)
                obj = self.decode_object(request, body, rt)
                out = await self.objects.create(rt, ns, obj, dry_run=self._dry_run(request))
                return json_response(out, 201, headers=self._warn_headers(request))
            if m == "DELETE":
                return await self.delete_collection(request, rt, ns)
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        if sub is None:
            if m == "GET":
                obj = await self.objects.get(self.objects.storage_type(rt), ns, name)
                return self.respond_object(request, rt, self.objects.to_view(rt, obj))
            if m == "PUT":
                return await self.put(request, rt, ns, name, None)
            if m == "PATCH":
                return await self.patch(request, rt, ns, name, None)
            if m == "DELETE":
                return await self.delete(request, rt, ns, name)
        elif sub in ("status", "finalize"):
            if m == "GET" and sub == "status":
                obj = await self.objects.get(self.objects.storage_type(rt), ns, name)
                return self.respond_object(request, rt, self.objects.to_view(rt, obj))
            if m == "PUT":
                return await self.put(request, rt, ns, name, sub)
            if m == "PATCH" and sub == "status":
                return await self.patch(request, rt, ns, name, sub)
        elif sub == "scale":
            return await self.scale(request, rt, ns or "", name)
        elif sub == "binding" and m == "POST":
            body = await self.read_body(request)
            return await self._binding(rt, ns or "", name, body, request)
        elif sub == "token" and m == "POST" and rt.plural == "serviceaccounts":
            body = await self.read_body(request)
            out = await sa_tokens.token_request(self.objects, self.sa_issuer, ns or "", name, self._parse(request, body),
                                                dry_run=self._dry_run(request))
            return json_response(out, 201)
        elif sub == "eviction" and m == "POST":
            body = await self.read_body(request)
            ev = self._parse(request, body)
            opts = (ev or {}).get("deleteOptions") or {}
            await self._evict(rt, ns or "", name, opts, self._dry_run(request))
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "code": 201}, 201)
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    async def _evict(self, rt: ResourceType, ns: str, name: str, opts: Obj, dry_run: bool) -> None:
        """The eviction subresource: delete the pod unless that violates its PodDisruptionBudget
        (kube's eviction REST: one PDB at most, status must be current, disruptionsAllowed is
        decremented and the pod recorded in status.disruptedPods before the delete)."""
        from tugboat.cluster.apiserver.kinds import pod_matches_selector

        pdb_rt = self.registry.get("policy", "v1", "poddisruptionbudgets")
        assert pdb_rt is not None
        for _attempt in range(5):
            pod = await self.objects.get(rt, ns, name)
            md, st = pod["metadata"], pod.get("status") or {}
            if md.get("deletionTimestamp") or st.get("phase") in ("Succeeded", "Failed", "Pending"):
                break  # canIgnorePDB
            labels = md.get("labels") or {}
            res = await self.store.list(pdb_rt.key_prefix(ns))
            pdbs = [p for p in (load(kv) for kv in res.items)
                    if pod_matches_selector((p.get("spec") or {}).get("selector"), labels)]
            if not pdbs:
                break
            if len(pdbs) > 1:
                raise ApiError(500, "This pod has more than one PodDisruptionBudget, which the eviction "
                               "subresource does not support.", "InternalError")
            pdb = pdbs[0]
            pst = pdb.get("status") or {}
            spec = pdb.get("spec") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
            if not ready and st.get("phase") == "Running":
                policy = spec.get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
                if policy == "AlwaysAllow" or (pst.get("currentHealthy", 0) >= pst.get("desiredHealthy", 0) > 0):
                    break  # an unhealthy pod does not count against a healthy budget
            too_many = "Cannot evict pod as it would violate the pod's disruption budget."
            pname = pdb["metadata"]["name"]
            if int(pst.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
                raise ApiError(429, too_many, "TooManyRequests", {"causes": [{
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {pname} is still being processed by the server."}]})
            allowed = int(pst.get("disruptionsAllowed") or 0)
            if allowed < 0:
                raise ApiError(403, "pdb disruptions allowed is negative", "Forbidden")
            if allowed == 0:
                raise ApiError(429, too_many, "TooManyRequests", {"causes": [{
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {pname} needs {pst.get('desiredHealthy', 0)} healthy pods "
                               f"and has {pst.get('currentHealthy', 0)} currently"}]})
            if dry_run:
                break
            if len(pst.get("disruptedPods") or {}) > 2000:
                raise ApiError(403, "DisruptedPods map too big - too many evictions not confirmed by PDB "
                               "controller", "Forbidden")
            rv = pdb["metadata"]["resourceVersion"]

            def take(cur: Obj, rv: str = rv) -> Obj:
                cur["metadata"]["resourceVersion"] = rv
                cst = cur.setdefault("status", {})
                cst["disruptionsAllowed"] = int(cst.get("disruptionsAllowed") or 0) - 1
                cst.setdefault("disruptedPods", {})[name] = meta.now_rfc3339()
                return cur

            try:
                await self.objects.update(pdb_rt, ns, pname, take, subresource="status")
            except ApiError as exc:
                if exc.code == 409:
                    continue  # the PDB changed under us: judge again
                raise
            break
        else:
            raise ApiError(429, "Cannot evict pod as it would violate the pod's disruption budget.",
                           "TooManyRequests")
        await self.objects.delete(rt, ns, name, opts, dry_run=dry_run)

    # --- bodies ----------------------------------------------------------------------------------
    async def read_body(self, request: web.Request) -> bytes:
        cl = request.content_length
        if cl is not None and cl > MAX_BODY:
            raise ApiError(413, "Request entity too large: limit is 3145728", "RequestEntityTooLarge")
        if cl is not None:
            return await request.read()
        chunks = []
        total = 0
        async for chunk in request.content.iter_chunked(65536):
            total += len(chunk)
            if total > MAX_BODY:
                raise ApiError(413, "Request entity too large: limit is 3145728", "RequestEntityTooLarge")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, request: web.Request, body: bytes) -> Any:
        ct = (request.content_type or JSON).lower()
        if "protobuf" in ct:
            from tugboat.cluster.apiserver import protobuf

            return protobuf.decode(body)
        if not body.strip():
            raise ApiError(400, "the body of the request was empty", "BadRequest")
        if "yaml" in ct and "apply-patch" not in ct:
            try:
                return yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise ApiError(400, f"the object provided is unrecognized: error converting YAML to JSON: {exc}",
                               "BadRequest") from None
        try:
            return _dec.decode(body)
        except msgspec.DecodeError as exc:
            if "yaml" in ct:
                try:
                    return yaml.safe_load(body)
                except yaml.YAMLError:
                    pass
            raise ApiError(400, f"the object provided is unrecognized: couldn't decode JSON: {exc}", "BadRequest") from None

    def decode_object(self, request: web.Request, body: bytes, rt: ResourceType) -> Obj:
        obj = self._parse(request, body)
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be a JSON or YAML object", "BadRequest")
        self._field_validation(request, body, obj, rt)
        return obj

    def _field_validation(self, request: web.Request, body: bytes, obj: Any, rt: ResourceType) -> None:
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise ApiError(400, f'fieldValidation must be one of "Ignore", "Warn", or "Strict", got {mode!r}',
                           "BadRequest")
        from tugboat.cluster.apiserver import schema
        problems = schema.unknown_fields(rt, obj, prune=mode != "Strict")
        if mode == "Ignore":
            return
        if mode == "Strict" and "json" in (request.content_type or JSON):
            problems += schema.duplicate_fields(body)
        if not problems:
            return
        if mode == "Strict":
            if len(problems) == 1:
                msg = f"strict decoding error: {problems[0]}"
            else:
                msg = "strict decoding error: " + ", ".join(problems)
            raise ApiError(400, msg, "BadRequest")
        request["warnings"] = problems

    @staticmethod
    def _warn_headers(request: web.Request) -> dict[str, str] | None:
        w = request.get("warnings")
        if not w:
            return None
        return {"Warning": ", ".join('299 - "' + p.replace('"', '\\"') + '"' for p in w)}

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        dr = request.query.getall("dryRun", [])
        for v in dr:
            if v != "All":
                raise ApiError(400, f"Invalid dry run value: {v}; supported values: All", "BadRequest")
        return bool(dr)

    # --- object output ---------------------------------------------------------------------------
    def table(self, rt: ResourceType, objs: list[Obj], *, with_columns: bool = True, include: str = "Metadata",
              list_meta: Obj | None = None) -> Obj:
        rows = []
        for o in objs:
            try:
                cells = rt.row(o) if rt.row else [o["metadata"]["name"]]
            except Exception:  # a half-filled object must not break `kubectl get`
                cells = [o["metadata"].get("name")] + ["<unknown>"] * (len(rt.columns) - 1)
            if include == "Object":
                ob: Any = o
            elif include == "None":
                ob = None
            else:
                ob = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata")}
            rows.append({"cells": cells, "object": ob})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {},
                "columnDefinitions": [c.definition() for c in rt.columns] if with_columns else None, "rows": rows}

    def respond_object(self, request: web.Request, rt: ResourceType, obj: Obj, status: int = 200) -> web.Response:
        acc = _accepts(request)
        if acc["table"]:
            return json_response(self.table(rt, [obj], include=request.query.get("includeObject", "Metadata"),
                                            list_meta={"resourceVersion": obj["metadata"].get("resourceVersion", "")}))
        if acc["partial"]:
            return json_response({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": obj.get("metadata")})
        return json_response(obj, status, headers=self._warn_headers(request))

    # --- list ------------------------------------------------------------------------------------
    async def list(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.Response:
        q = request.query
        sel = Selector(rt, q.get("labelSelector"), q.get("fieldSelector"))
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError:
            raise ApiError(400, f"invalid limit: {q.get('limit')}", "BadRequest") from None
        rv = q.get("resourceVersion")
        if rv == "0" and not q.get("continue"):
            limit = 0  # served "from the cache": the whole list
        items, rev, token, _ = await self.objects.list(self.objects.storage_type(rt), ns, sel, limit,
                                                       q.get("continue"), rv, q.get("resourceVersionMatch"))
        items = [self.objects.to_view(rt, o) for o in items]
        lm: Obj = {"resourceVersion": str(rev)}
        if token:
            lm["continue"] = token
        acc = _accepts(request)
        if acc["table"]:
            return json_response(self.table(rt, items, include=q.get("includeObject", "Metadata"), list_meta=lm))
        if acc["partial"]:
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": lm,
                                  "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                             "metadata": o["metadata"]} for o in items]})
        return json_response({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": lm, "items": items})

    # --- watch -----------------------------------------------------------------------------------
    async def watch(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.StreamResponse:
        q = request.query
        srt = self.objects.storage_type(rt)
        sel = Selector(rt, q.get("labelSelector"), q.get("fieldSelector"))
        acc = _accepts(request)
        bookmarks = meta.parse_bool(q.get("allowWatchBookmarks"))
        initial = meta.parse_bool(q.get("sendInitialEvents"))
        try:
            timeout = float(q["timeoutSeconds"]) if "timeoutSeconds" in q else random.uniform(1800, 3600)
        except ValueError:
            raise ApiError(400, "invalid timeoutSeconds", "BadRequest") from None
        deadline = time.monotonic() + timeout
        rv = q.get("resourceVersion") or ""
        prefix = srt.key_prefix(ns)
        initial_objs: list[Obj] = []
        if rv in ("", "0") or initial:
            items, rev, _, _ = await self.objects.list(srt, ns, sel)
            initial_objs = items
            start = rev
        else:
            try:
                start = int(rv)
            except ValueError:
                raise ApiError(400, f"invalid resource version: {rv}", "BadRequest") from None
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        first_table = [True]
        include = q.get("includeObject", "Metadata")

        def line(typ: str, obj: Obj, ev: CachedEvent | None = None) -> bytes:
            if acc["table"]:
                body = encode(self.table(rt, [obj], with_columns=first_table[0], include=include,
                                         list_meta={"resourceVersion": obj["metadata"].get("resourceVersion", "")}))
                first_table[0] = False
            elif acc["partial"]:
                body = encode({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": obj.get("metadata")})
            elif ev is not None:
                # the same line goes to every plain watcher of this version: build it once, framed
                # as an HTTP chunk (see write_raw)
                key = rt.api_version + "\x00" + typ
                cached = ev.encoded.get(key)
                if cached is None:
                    body = encode(obj)
                    ln = b'{"type":"' + typ.encode() + b'","object":' + body + b"}\n"
                    cached = ev.encoded[key] = b"%x\r\n%s\r\n" % (len(ln), ln)
                return cached
            else:
                body = encode(obj)
            return b'{"type":"' + typ.encode() + b'","object":' + body + b"}\n"

        def bookmark(rev: int, end_initial: bool = False) -> bytes:
            md: Obj = {"resourceVersion": str(rev)}
            if end_initial:
                md["annotations"] = {"k8s.io/initial-events-end": "true"}
            return b'{"type":"BOOKMARK","object":' + encode({"kind": rt.kind, "apiVersion": rt.api_version,
                                                             "metadata": md}) + b"}\n"

        transport = request.transport

        def write_raw(data: bytes, framed: bool = False) -> bool:
            # a chunk of the chunked response, written synchronously from the watch cache
            if transport is None or transport.is_closing():
                return False
            transport.write(data if framed else b"%x\r\n%s\r\n" % (len(data), data))
            return transport.get_write_buffer_size() < 32 * 1024 * 1024  # else: too slow, drop it

        plain = not acc["table"] and not acc["partial"]
        framed = plain and rt.from_storage is None
        # watchers of the same version and selectors get the same bytes: the selector is judged and
        # the chunk built by the first of them, the others look it up (one dict lookup and one
        # socket write per watcher)
        memo = ("watch", rt.api_version, q.get("labelSelector") or "", q.get("fieldSelector") or "") \
            if framed else None

        def sink(ev: CachedEvent) -> bool:
            if memo is not None:
                data = ev.encoded.get(memo, _MISSING)
                if data is _MISSING:
                    data = ev.encoded[memo] = self._event_line(rt, sel, ev, line)
            else:
                data = self._event_line(rt, sel, ev, line)
            if not data:
                return True
            return write_raw(data, framed=framed)

        watcher = None
        try:
            if initial_objs:
                await resp.write(b"".join(line("ADDED", self.objects.to_view(rt, o)) for o in initial_objs))
            if initial and bookmarks:
                await resp.write(bookmark(start, True))
            try:
                watcher = self.cache.watch(prefix, start, sink)
            except TooOld as exc:
                err = ApiError(410, f"too old resource version: {exc.requested} ({exc.oldest})", "Expired").status()
                await resp.write(b'{"type":"ERROR","object":' + encode(err) + b"}\n")
                await resp.write_eof()
                return resp
            bookmark_every = 30.0
            while not watcher.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(remaining, bookmark_every) if bookmarks else remaining
                try:
                    await asyncio.wait_for(watcher.done.wait(), wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() < deadline and not write_raw(
                            bookmark(max(watcher.last_rev, start))):
                        break
                if transport is None or transport.is_closing():
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if watcher is not None:
                watcher.close()
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    def _event_line(self, rt: ResourceType, sel: Selector, ev: CachedEvent, line: Any) -> bytes | None:
        obj = ev.obj
        if sel.empty:
            typ = ev.type
        else:
            now_match = sel(obj)
            if ev.type == "DELETED":
                if not now_match:
                    return None
                typ = "DELETED"
            elif ev.type == "ADDED":
                if not now_match:
                    return None
                typ = "ADDED"
            else:
                was = sel(ev.prev) if ev.prev is not None else False
                if now_match and was:
                    typ = "MODIFIED"
                elif now_match:
                    typ = "ADDED"
                elif was:
                    typ = "DELETED"
                else:
                    return None
        if rt.from_storage is not None:
            return line(typ, rt.from_storage(obj))
        return line(typ, obj, ev)

    # --- writes ----------------------------------------------------------------------------------
    async def put(self, request: web.Request, rt: ResourceType, ns: str | None, name: str, sub: str | None) -> web.Response:
        body = await self.read_body(request)
        obj = self.decode_object(request, body, rt)

        def mutate(cur: Obj) -> Obj:
            if sub == "finalize":
                cur["spec"] = obj.get("spec") or {}
                return cur
            return obj

        out, _ = await self.objects.update(rt, ns, name, mutate, subresource=None if sub == "finalize" else sub,
                                           dry_run=self._dry_run(request))
        return json_response(out, headers=self._warn_headers(request))

    async def patch(self, request: web.Request, rt: ResourceType, ns: str | None, name: str, sub: str | None) -> web.Response:
        body = await self.read_body(request)
        ct = (request.content_type or "").lower()
        if ct == "application/apply-patch+yaml":
            return await self.apply_patch(request, rt, ns, name, body, sub)
        patch = self._parse(request, body)
        if ct == "application/json-patch+json":
            fn = json_patch
        elif ct == "application/merge-patch+json":
            fn = merge_patch
        elif ct == "application/strategic-merge-patch+json":
            def fn(cur: Any, p: Any) -> Any:
                return strategic_merge_patch(cur, p, self.objects.storage_type(rt).kind)
        else:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml, application/strategic-merge-patch+json",
                           "UnsupportedMediaType")
        if ct != "application/json-patch+json" and not isinstance(patch, dict):
            raise ApiError(400, "the body of the request must be a JSON object for this patch type", "BadRequest")

        def mutate(cur: Obj) -> Obj:
            out = fn(cur, patch)
            if isinstance(out, dict):
                self._field_validation(request, b"", out, rt)
            return out

        out, _ = await self.objects.update(rt, ns, name, mutate, subresource=sub, dry_run=self._dry_run(request))
        return json_response(out, headers=self._warn_headers(request))

    async def apply_patch(self, request: web.Request, rt: ResourceType, ns: str | None, name: str, body: bytes,
                          sub: str | None) -> web.Response:
        """Server-side apply, simplified: no field ownership; the applied object is merged (strategic
        merge) over the live one, or created when missing."""
        if not request.query.get("fieldManager"):
            raise ApiError(400, "PATCH with apply-patch+yaml requires a fieldManager query parameter", "BadRequest")
        try:
            obj = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise ApiError(400, f"error decoding YAML: {exc}", "BadRequest") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be an object", "BadRequest")
        self._field_validation(request, b"", obj, rt)
        try:
            out, _ = await self.objects.update(
                rt, ns, name, lambda cur: strategic_merge_patch(cur, obj, self.objects.storage_type(rt).kind),
                subresource=sub, dry_run=self._dry_run(request))
            return json_response(out)
        except ApiError as exc:
            if exc.code != 404 or sub:
                raise
        obj.setdefault("metadata", {})["name"] = name
        out = await self.objects.create(rt, ns, obj, dry_run=self._dry_run(request))
        return json_response(out, 201)

    def _delete_options(self, request: web.Request, body: bytes) -> Obj:
        opts: Obj = {}
        if body.strip():
            try:
                parsed = _dec.decode(body)
            except msgspec.DecodeError as exc:
                raise ApiError(400, f"invalid DeleteOptions: {exc}", "BadRequest") from None
            if isinstance(parsed, dict):
                opts.update(parsed)
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise ApiError(400, "invalid gracePeriodSeconds", "BadRequest") from None
        if "orphanDependents" in q:
            opts["orphanDependents"] = meta.parse_bool(q["orphanDependents"])
        for k in ("uid", "resourceVersion"):
            if f"preconditions.{k}" in q:
                opts.setdefault("preconditions", {})[k] = q[f"preconditions.{k}"]
        if q.getall("dryRun", []):
            opts["dryRun"] = q.getall("dryRun")
        return opts

    async def delete(self, request: web.Request, rt: ResourceType, ns: str | None, name: str) -> web.Response:
        body = await self.read_body(request)
        opts = self._delete_options(request, body)
        dry = bool(opts.get("dryRun"))
        obj, gone = await self.objects.delete(rt, ns, name, opts, dry_run=dry)
        if gone and not (rt.plural == "pods" and rt.group == ""):
            return json_response(status_success(rt, obj))
        return json_response(obj, 200)

    async def delete_collection(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.Response:
        body = await self.read_body(request)
        opts = self._delete_options(request, body)
        q = request.query
        sel = Selector(rt, q.get("labelSelector"), q.get("fieldSelector"))
        srt = self.objects.storage_type(rt)
        items, rev, _, _ = await self.objects.list(srt, ns, sel)
        out = []
        for o in items:
            md = o["metadata"]
            with contextlib.suppress(ApiError):
                d, _ = await self.objects.delete(rt, md.get("namespace"), md["name"], opts, dry_run=bool(opts.get("dryRun")))
                out.append(d)
        return json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                              "metadata": {"resourceVersion": str(rev)}, "items": out})

    # --- subresources ----------------------------------------------------------------------------
    async def scale(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.Response:
        def to_scale(o: Obj) -> Obj:
            spec, st = o.get("spec") or {}, o.get("status") or {}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": name, "namespace": ns, "uid": o["metadata"].get("uid"),
                                 "resourceVersion": o["metadata"].get("resourceVersion"),
                                 "creationTimestamp": o["metadata"].get("creationTimestamp")},
                    "spec": {"replicas": spec.get("replicas", 0)},
                    "status": {"replicas": st.get("replicas", 0),
                               "selector": meta.selector_from_label_selector(spec.get("selector"))}}

        m = request.method
        if m == "GET":
            return json_response(to_scale(await self.objects.get(rt, ns, name)))
        if m not in ("PUT", "PATCH"):
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        body = await self.read_body(request)
        payload = self._parse(request, body)
        ct = (request.content_type or "").lower()

        def mutate(cur: Obj) -> Obj:
            sc = to_scale(cur)
            if m == "PUT":
                new_sc = payload
                rv = ((new_sc or {}).get("metadata") or {}).get("resourceVersion")
                if rv and rv != cur["metadata"]["resourceVersion"]:
                    raise meta.conflict(rt.plural, rt.group, name)
            elif ct == "application/json-patch+json":
                new_sc = json_patch(sc, payload)
            elif ct == "application/strategic-merge-patch+json":
                new_sc = strategic_merge_patch(sc, payload, "Scale")
            else:
                new_sc = merge_patch(sc, payload)
            reps = ((new_sc or {}).get("spec") or {}).get("replicas")
            if not isinstance(reps, int) or reps < 0:
                raise meta.invalid("Scale", "autoscaling", name, [("FieldValueInvalid", "spec.replicas",
                                   f"Invalid value: {reps}: must be greater than or equal to 0")])
            cur.setdefault("spec", {})["replicas"] = reps
            cur["metadata"].pop("resourceVersion", None)
            return cur

        out, _ = await self.objects.update(rt, ns, name, mutate, dry_run=self._dry_run(request))
        return json_response(to_scale(out))

    async def _binding(self, rt: ResourceType, ns: str, name: str | None, body: bytes, request: web.Request) -> web.Response:
        b = self._parse(request, body)
        if not isinstance(b, dict):
            raise ApiError(400, "binding must be an object", "BadRequest")
        pod_name = name or (b.get("metadata") or {}).get("name")
        target = b.get("target") or {}
        node = target.get("name")
        if not pod_name:
            raise meta.invalid("Binding", "", "", [("FieldValueRequired", "metadata.name", "Required value")])
        if not node:
            raise meta.invalid("Binding", "", pod_name, [("FieldValueRequired", "target.name", "Required value")])

        def mutate(cur: Obj) -> Obj:
            spec = cur.setdefault("spec", {})
            if spec.get("nodeName"):
                raise meta.conflict("pods", "", pod_name, f"pod {pod_name} is already assigned to node "
                                    f'"{spec["nodeName"]}"')
            if cur["metadata"].get("deletionTimestamp"):
                raise meta.conflict("pods", "", pod_name, "pod is being deleted, cannot be assigned to a host")
            spec["nodeName"] = node
            cur["metadata"].pop("resourceVersion", None)
            conds = [c for c in (cur.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": meta.now_rfc3339()})
            cur.setdefault("status", {})["conditions"] = conds
            return cur

        pod_rt = self.registry.get("", "v1", "pods")
        assert pod_rt is not None
        # binding writes spec.nodeName and the PodScheduled condition in one update
        await self._update_bypassing_status(pod_rt, ns, pod_name, mutate)
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, 201)

    async def _update_bypassing_status(self, rt: ResourceType, ns: str, name: str, mutate: Any) -> None:
        """An update that may change both spec and status (bindings): validation of the pod spec's
        immutability is skipped for nodeName, as the real binding registry does."""
        key = rt.key(ns, name)
        for _ in range(20):
            kv = await self.store.get(key)
            if kv is None:
                raise meta.not_found("pods", "", name)
            cur = load(kv)
            new = mutate(json.loads(json.dumps(cur)))
            from tugboat.cluster.apiserver.handlers import strip_for_storage
            from tugboat.cluster.apiserver.storage.base import RevisionMismatch
            try:
                await self.store.update(key, strip_for_storage(new), kv.mod_revision)
                return
            except RevisionMismatch:
                continue
        raise meta.conflict("pods", "", name)


async def build(store: Store, data_dir: str | None = None, tokens: dict[str, tuple[str, list[str]]] | None = None,
                require_auth: bool = True, sa_issuer: TokenIssuer | None = None) -> APIServer:
    await store.start()
    srv = APIServer(store, tokens=tokens, require_auth=require_auth, data_dir=data_dir, sa_issuer=sa_issuer)
    await srv.start()
    return srv


def private_dir(path: str) -> None:
    """Create ``path`` as 0700, or tighten an existing one of ours to 0700: it holds the CA key,
    tokens and the datastore (every Secret), for no other host user to read."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_mode & 0o077:
        if st.st_uid != os.geteuid():
            log.warning("data dir %s belongs to uid %d and is open to other users (mode %o)",
                        path, st.st_uid, st.st_mode & 0o777)
            return
        os.chmod(path, 0o700)


async def serve(listen: str, datastore: str | None, data_dir: str, *, ready: Any = None) -> None:
    """Run the API server until cancelled (SIGTERM/SIGINT stop it cleanly)."""
    import signal

    from tugboat.cluster.apiserver.certs import ClusterPKI
    from tugboat.cluster.apiserver.storage import open_store

    host, _, port_s = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port_s)
    private_dir(data_dir)
    pki = ClusterPKI(data_dir)
    hosts = [host] if host not in ("0.0.0.0", "::") else []
    pki.ensure(hosts)
    store = open_store(datastore, data_dir)
    srv = await build(store, data_dir, tokens=pki.tokens(), sa_issuer=sa_tokens.TokenIssuer.from_file(pki.sa_key))
    # many short-lived dicts per request and a large watch-cache ring: collect the young
    # generation less often, and keep start-up objects out of full collections
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 50)
    # an access log line per request only when debugging (it costs throughput)
    access = logging.getLogger("aiohttp.access") if log.isEnabledFor(logging.DEBUG) else None
    runner = web.ServerRunner(srv.make_server(access_log=access), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=pki.server_ssl_context(), backlog=1024, reuse_address=True)
    await site.start()
    shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    kc = pki.write_kubeconfigs(f"https://{shown}:{port}")
    log.info("API server listening on https://%s:%d; admin kubeconfig %s", host, port, kc)
    print(f"tug cluster apiserver: listening on https://{shown}:{port} (datastore {datastore or 'sqlite'}); "
          f"KUBECONFIG={kc}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await srv.stop()
        await runner.cleanup()
        await store.close()
