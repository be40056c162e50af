"""Object life cycle on top of the store: create, read, update, patch, delete, list, watch.

Objects are stored in their storage version (the group's preferred version) without
``metadata.resourceVersion``; the revision of the last write is put back on every read. A request
in another version (autoscaling/v1 HPAs) is converted on the way in and out.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from tugboat.cluster.apiserver import meta
from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.registry import Obj, Registry, ResourceType
from tugboat.cluster.apiserver.storage.base import (
    Compacted,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionMismatch,
    Store,
)

if TYPE_CHECKING:
    from tugboat.cluster.apiserver.watchcache import WatchCache

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
_uid_rng = random.Random(os.urandom(32))  # object UIDs need uniqueness, not secrecy; os.urandom is slow here


def new_uid() -> str:
    h = f"{_uid_rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODEPORT_RANGE = (30000, 32767)


def encode(obj: Any) -> bytes:
    return _enc.encode(obj)


def load(kv: KeyValue) -> Obj:
    obj = _dec.decode(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def strip_for_storage(obj: Obj) -> bytes:
    md = obj.get("metadata") or {}
    rv = md.pop("resourceVersion", None)
    md.pop("selfLink", None)
    try:
        return encode(obj)
    finally:
        if rv is not None:
            md["resourceVersion"] = rv


class Selector:
    """A compiled label + field selector for one resource type."""

    def __init__(self, rt: ResourceType, label_selector: str | None, field_selector: str | None) -> None:
        self.labels = meta.parse_label_selector(label_selector)
        allowed = {"metadata.name", "metadata.namespace"} | rt.field_names
        self.fields = meta.parse_field_selector(field_selector, allowed, rt.plural)
        self.rt = rt
        self.empty = self.labels is None and self.fields is None

    def name_equals(self) -> str | None:
        for f, eq, v in self.fields or []:
            if f == "metadata.name" and eq:
                return v
        return None

    def __call__(self, obj: Obj) -> bool:
        if self.empty:
            return True
        md = obj.get("metadata") or {}
        if self.labels is not None and not self.labels(md.get("labels") or {}):
            return False
        if self.fields:
            extra = self.rt.fields(obj) if self.rt.fields else {}
            for f, eq, v in self.fields:
                if f == "metadata.name":
                    val = md.get("name", "")
                elif f == "metadata.namespace":
                    val = md.get("namespace", "")
                else:
                    val = extra.get(f, "")
                if (val == v) != eq:
                    return False
        return True


class ObjectService:
    """The generic registry logic shared by every kind (the Go apiserver's ``genericregistry.Store``)."""

    def __init__(self, store: Store, registry: Registry, cache: WatchCache | None = None) -> None:
        self.store = store
        self.registry = registry
        self.cache = cache
        self.namespaces: dict[str, str] = {}  # name -> phase, kept by the watch cache feed
        self.priority_classes: dict[str, Obj] = {}  # name -> PriorityClass, kept by the watch cache feed
        self._alloc_lock = asyncio.Lock()

    # --- version handling ------------------------------------------------------------------------
    def storage_type(self, rt: ResourceType) -> ResourceType:
        if rt.to_storage is None:
            return rt
        for other in self.registry.by_gvr.values():
            if other.group == rt.group and other.plural == rt.plural and other.to_storage is None:
                return other
        return rt

    def to_view(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.from_storage is not None:
            return rt.from_storage(obj)
        return obj

    def to_storage(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.to_storage is not None:
            return rt.to_storage(obj)
        return obj

    # --- reads -----------------------------------------------------------------------------------
    async def get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        kv = await self.store.get(rt.key(ns, name))
        if kv is None:
            raise meta.not_found(rt.plural, rt.group, name)
        return load(kv)

    async def list(
        self, rt: ResourceType, ns: str | None, sel: Selector, limit: int = 0, cont: str | None = None,
        resource_version: str | None = None, match: str | None = None,
    ) -> tuple[list[Obj], int, str | None, int | None]:
        """-> (storage-version objects, revision, continue token, remaining count)."""
        prefix = rt.key_prefix(ns)
        start_after = ""
        rev = 0
        if cont:
            try:
                tok = _dec.decode(base64.urlsafe_b64decode(cont + "=" * (-len(cont) % 4)))
                rev, start_after = int(tok["rv"]), str(tok["start"])
                if not start_after.startswith(prefix):
                    raise ValueError
            except (ValueError, KeyError, TypeError, msgspec.DecodeError):
                raise ApiError(400, "continue key is not valid", "BadRequest") from None
        elif resource_version and resource_version != "0" and match == "Exact":
            try:
                rev = int(resource_version)
            except ValueError:
                raise ApiError(400, f"invalid resource version: {resource_version}", "BadRequest") from None
        name = sel.name_equals()
        items: list[Obj] = []
        try:
            if name is not None and rt.namespaced and ns and not cont:
                kv = await self.store.get(rt.key(ns, name)) if not rev else None
                if rev:
                    res = await self.store.list(rt.key(ns, name), revision=rev)
                    kvs = [k for k in res.items if k.key == rt.key(ns, name)]
                    at = res.revision
                else:
                    kvs = [kv] if kv else []
                    at = await self.store.current_revision()
                    if kv:
                        at = max(at, kv.mod_revision)
                items = [o for o in (load(k) for k in kvs) if sel(o)]
                return items, at, None, None
            more = False
            last_key = start_after
            while True:
                batch = limit * 2 if limit and not sel.empty else limit
                res = await self.store.list(prefix, revision=rev, start_after=last_key, limit=batch)
                rev = res.revision
                for kv in res.items:
                    last_key = kv.key
                    o = load(kv)
                    if sel(o):
                        items.append(o)
                        if limit and len(items) >= limit:
                            break
                if limit and len(items) >= limit:
                    more = res.more or kv is not res.items[-1]
                    break
                if not res.more:
                    break
        except Compacted as exc:
            raise ApiError(410, "The provided continue parameter is too old to display a consistent list result. "
                           "You can start a new list without the continue parameter, or use the continue token "
                           "in this response to retrieve the remainder of the results. Continuing with the "
                           "provided token results in an inconsistent list - objects that were created, modified, "
                           f"or deleted between the time the first chunk was returned and now may show up in the "
                           f"list. (compacted at {exc.compact_revision})", "Expired") from None
        token = None
        if more:
            token = base64.urlsafe_b64encode(encode({"rv": rev, "start": last_key})).decode().rstrip("=")
        return items, rev, token, None

    # --- admission helpers -----------------------------------------------------------------------
    async def check_namespace(self, ns: str) -> None:
        phase = self.namespaces.get(ns)
        if phase is None:
            kv = await self.store.get(f"/registry/core/namespaces/{ns}")
            if kv is None:
                raise meta.not_found("namespaces", "", ns)
            phase = (_dec.decode(kv.value).get("status") or {}).get("phase", "Active")
        if phase == "Terminating":
            raise ApiError(403, f"unable to create new content in namespace {ns} because it is being terminated",
                           "Forbidden", {"name": ns, "kind": "namespaces"})

    async def _allocate_service(self, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return
        async with self._alloc_lock:
            need_ip = not spec.get("clusterIP")
            need_ports = spec.get("type") in ("NodePort", "LoadBalancer") and any(
                not p.get("nodePort") for p in spec.get("ports") or [])
            if not need_ip and not need_ports:
                if spec.get("clusterIP") and spec.get("clusterIP") != "None":
                    spec.setdefault("clusterIPs", [spec["clusterIP"]])
                return
            res = await self.store.list("/registry/core/services/")
            used_ips, used_ports = set(), set()
            for kv in res.items:
                s = _dec.decode(kv.value).get("spec") or {}
                if s.get("clusterIP"):
                    used_ips.add(s["clusterIP"])
                for p in s.get("ports") or []:
                    if p.get("nodePort"):
                        used_ports.add(p["nodePort"])
            if need_ip:
                hosts = SERVICE_CIDR.num_addresses
                start = random.randrange(10, hosts - 2)
                for i in range(hosts - 12):
                    ip = str(SERVICE_CIDR.network_address + 10 + (start + i) % (hosts - 12))
                    if ip not in used_ips:
                        spec["clusterIP"] = ip
                        break
                else:
                    raise ApiError(500, "Internal error occurred: failed to allocate a serviceIP: range is full",
                                   "InternalError")
            if spec.get("clusterIP") and spec["clusterIP"] != "None":
                spec["clusterIPs"] = [spec["clusterIP"]]
            if need_ports:
                for p in spec.get("ports") or []:
                    if not p.get("nodePort"):
                        for _ in range(10000):
                            n = random.randint(*NODEPORT_RANGE)
                            if n not in used_ports:
                                p["nodePort"] = n
                                used_ports.add(n)
                                break

    async def _priority_class(self, name: str) -> Obj | None:
        kv = await self.store.get(f"/registry/scheduling.k8s.io/priorityclasses/{name}")
        return load(kv) if kv is not None else None

    async def _admit_pod_priority(self, pod: Obj) -> None:
        """The Priority admission plugin: spec.priorityClassName -> spec.priority (+ preemptionPolicy);
        without a class name the globalDefault class applies. A pod that sets spec.priority itself and
        names no class (with no global default) keeps it (kube would force 0; our scheduler tests rely
        on it)."""
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        name = pod["metadata"].get("name", "")
        pcn = spec.get("priorityClassName")
        pc: Obj | None = None
        if pcn:
            pc = await self._priority_class(pcn)
            if pc is None:
                raise ApiError(403, f'pods "{name}" is forbidden: no PriorityClass with name {pcn} was found',
                               "Forbidden", {"name": name, "kind": "pods"})
        else:
            defaults = [c for c in self.priority_classes.values() if c.get("globalDefault")]
            if defaults:
                pc = min(defaults, key=lambda c: (int(c.get("value") or 0), c["metadata"]["name"]))
                spec["priorityClassName"] = pc["metadata"]["name"]
        if pc is None:
            return
        value = int(pc.get("value") or 0)
        if spec.get("priority") is not None and spec["priority"] != value:
            raise ApiError(403, f'pods "{name}" is forbidden: the integer value of priority ({spec["priority"]}) '
                           f"must not be provided in pod spec; priority admission controller computed {value} "
                           "from the given PriorityClass name", "Forbidden", {"name": name, "kind": "pods"})
        spec["priority"] = value
        pp = pc.get("preemptionPolicy") or "PreemptLowerPriority"
        if spec.get("preemptionPolicy") is not None and spec["preemptionPolicy"] != pp:
            raise ApiError(403, f'pods "{name}" is forbidden: the string value of PreemptionPolicy '
                           f"({spec['preemptionPolicy']}) must not be provided in pod spec; priority admission "
                           f"controller computed {pp} from the given PriorityClass name", "Forbidden",
                           {"name": name, "kind": "pods"})
        spec["preemptionPolicy"] = pp

    async def _admit_priorityclass(self, pc: Obj, old: Obj | None = None) -> None:
        """Only one PriorityClass may be the global default."""
        if not pc.get("globalDefault") or (old is not None and old.get("globalDefault")):
            return
        name = pc["metadata"].get("name", "")
        res = await self.store.list("/registry/scheduling.k8s.io/priorityclasses/")
        for kv in res.items:
            other = load(kv)
            oname = other["metadata"]["name"]
            if oname != name and other.get("globalDefault"):
                raise ApiError(403, f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: PriorityClass '
                               f"{oname} is already marked as default. Only one default can exist", "Forbidden",
                               {"name": name, "group": "scheduling.k8s.io", "kind": "priorityclasses"})

    def _check_kind(self, rt: ResourceType, obj: Obj) -> None:
        kind, av = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != rt.kind:
            raise ApiError(400, f"the object provided is unrecognized (kind: {kind}): expected {rt.kind} "
                           f"for {rt.plural}", "BadRequest")
        if av and av != rt.api_version:
            raise ApiError(400, f"the API version in the data ({av}) does not match the expected API version "
                           f"({rt.api_version})", "BadRequest")
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version

    # --- create ----------------------------------------------------------------------------------
    async def create(self, rt: ResourceType, ns: str | None, obj: Obj, *, dry_run: bool = False) -> Obj:
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be a JSON or YAML object", "BadRequest")
        self._check_kind(rt, obj)
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        if rt.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                               "the request", "BadRequest")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + "".join(random.choices(NAME_CHARS, k=5))
            else:
                raise meta.invalid(rt.kind, rt.group, "", [("FieldValueRequired", "metadata.name",
                                                            "Required value: name or generateName is required")])
        for f in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            md.pop(f, None)
        md["uid"] = new_uid()
        md["creationTimestamp"] = meta.now_rfc3339()
        srt = self.storage_type(rt)
        sobj = self.to_storage(rt, obj)
        smd = sobj["metadata"]
        if "spec" in sobj or srt.plural in ("deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "pods"):
            smd["generation"] = 1
        if srt.plural == "pods" and srt.group == "":
            await self._admit_pod_priority(sobj)
            from tugboat.cluster.apiserver.serviceaccounts import admit_pod
            await admit_pod(self, sobj)  # the ServiceAccount admission plugin
        elif srt.plural == "priorityclasses":
            await self._admit_priorityclass(sobj)
        if srt.defaults:
            srt.defaults(sobj)
        if srt.status_subresource and srt.reset_status_on_create:
            self._initial_status(srt, sobj)
        if srt.validate:
            causes = srt.validate(sobj, None)
            if causes:
                raise meta.invalid(rt.kind, rt.group, md["name"], causes)
        if rt.namespaced:
            await self.check_namespace(ns or "")
        if srt.plural == "services" and srt.group == "" and not dry_run:
            await self._allocate_service(sobj, None)
        if dry_run:
            return self.to_view(rt, sobj)
        try:
            rev = await self.store.create(srt.key(ns, md["name"]), strip_for_storage(sobj))
        except KeyExists:
            raise meta.already_exists(rt.plural, rt.group, md["name"]) from None
        sobj["metadata"]["resourceVersion"] = str(rev)
        return self.to_view(rt, sobj)

    def _initial_status(self, rt: ResourceType, obj: Obj) -> None:
        if rt.plural == "pods" and rt.group == "":
            from tugboat.cluster.apiserver.kinds import pod_initial_status
            pod_initial_status(obj)
        elif rt.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        elif rt.plural == "services":
            obj["status"] = {"loadBalancer": {}}
        elif rt.plural == "persistentvolumeclaims" or rt.plural == "persistentvolumes":
            obj["status"] = {"phase": "Pending"}
        elif rt.plural == "nodes":
            pass
        elif rt.plural == "poddisruptionbudgets":
            obj["status"] = {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
        else:
            obj["status"] = required_zero_status(rt)


    # --- update ----------------------------------------------------------------------------------
    async def update(
        self, rt: ResourceType, ns: str | None, name: str, mutate: Callable[[Obj], Obj], *,
        subresource: str | None = None, dry_run: bool = False, precondition_rv: bool = True,
    ) -> tuple[Obj, bool]:
        """Read-modify-write with retries. ``mutate`` gets the current object in the request's version
        (a deep copy) and returns the new one. -> (new object in the request's version, changed?)."""
        srt = self.storage_type(rt)
        key = srt.key(ns, name)
        for _attempt in range(20):
            kv = await self.store.get(key)
            if kv is None:
                raise meta.not_found(rt.plural, rt.group, name)
            cur = load(kv)
            view = self.to_view(rt, copy.deepcopy(cur))
            new_view = mutate(view)
            if not isinstance(new_view, dict):
                raise ApiError(400, "the body of the request must be a JSON or YAML object", "BadRequest")
            self._check_kind(rt, new_view)
            nmd = new_view.get("metadata")
            if not isinstance(nmd, dict):
                nmd = new_view["metadata"] = {}
            if nmd.get("name") and nmd["name"] != name:
                raise ApiError(400, f"the name of the object ({nmd['name']}) does not match the name on the URL "
                               f"({name})", "BadRequest")
            if rt.namespaced and nmd.get("namespace") and nmd["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                               "the request", "BadRequest")
            req_rv = nmd.get("resourceVersion")
            explicit_rv = bool(req_rv) and precondition_rv
            if explicit_rv and req_rv != cur["metadata"]["resourceVersion"]:
                raise meta.conflict(rt.plural, rt.group, name)
            new = self.to_storage(rt, new_view)
            self._carry_meta(cur, new, name, ns if rt.namespaced else None)
            if subresource == "status":
                new = {**{k: v for k, v in cur.items() if k != "status"}, "status": new.get("status"),
                       "metadata": {**cur["metadata"], **{k: new["metadata"][k] for k in ("labels", "annotations")
                                                          if k in new["metadata"]}}}
                if new.get("status") is None:
                    new.pop("status")
            elif subresource is None and srt.status_subresource and "status" in cur:
                new["status"] = cur["status"]
            elif subresource is None and srt.status_subresource:
                new.pop("status", None)
            if srt.defaults:
                srt.defaults(new)
            if srt.plural == "priorityclasses":
                await self._admit_priorityclass(new, cur)
            self._bump_generation(cur, new)
            if srt.validate:
                causes = srt.validate(new, cur)
                if causes:
                    raise meta.invalid(rt.kind, rt.group, name, causes)
            if srt.plural == "services" and srt.group == "":
                spec = new.setdefault("spec", {})
                old_spec = cur.get("spec") or {}
                if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                    spec["clusterIP"] = old_spec["clusterIP"]
                    spec.setdefault("clusterIPs", old_spec.get("clusterIPs") or [old_spec["clusterIP"]])
                for p in spec.get("ports") or []:
                    if not p.get("nodePort"):
                        for op in old_spec.get("ports") or []:
                            if op.get("port") == p.get("port") and op.get("nodePort") and \
                                    spec.get("type") in ("NodePort", "LoadBalancer"):
                                p["nodePort"] = op["nodePort"]
                if not dry_run:
                    await self._allocate_service(new, cur)
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            if new == cur:
                return self.to_view(rt, cur), False
            if dry_run:
                return self.to_view(rt, new), True
            md = new["metadata"]
            if md.get("deletionTimestamp") and not md.get("finalizers") and self._finalizers_done(srt, new):
                try:
                    rev, _ = await self.store.delete(key, kv.mod_revision)
                except RevisionMismatch:
                    if explicit_rv:
                        raise meta.conflict(rt.plural, rt.group, name) from None
                    continue
                except KeyNotFound:
                    raise meta.not_found(rt.plural, rt.group, name) from None
                md["resourceVersion"] = str(rev)
                return self.to_view(rt, new), True
            try:
                rev = await self.store.update(key, strip_for_storage(new), kv.mod_revision)
            except RevisionMismatch:
                if explicit_rv:
                    raise meta.conflict(rt.plural, rt.group, name) from None
                continue
            except KeyNotFound:
                raise meta.not_found(rt.plural, rt.group, name) from None
            md["resourceVersion"] = str(rev)
            return self.to_view(rt, new), True
        raise meta.conflict(rt.plural, rt.group, name)

    def _finalizers_done(self, rt: ResourceType, obj: Obj) -> bool:
        if rt.plural == "namespaces" and rt.group == "":
            return not (obj.get("spec") or {}).get("finalizers")
        if rt.plural == "pods" and rt.group == "":
            # a terminating pod goes away when its node agent confirms (gracePeriod 0) or it never ran
            return bool(not (obj.get("spec") or {}).get("nodeName")
                        or (obj["metadata"].get("deletionGracePeriodSeconds") == 0))
        return True

    @staticmethod
    def _carry_meta(cur: Obj, new: Obj, name: str, ns: str | None) -> None:
        cmd, nmd = cur["metadata"], new["metadata"]
        nmd["name"] = name
        if ns is not None:
            nmd["namespace"] = ns
        for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if f in cmd:
                nmd[f] = cmd[f]
            else:
                nmd.pop(f, None)
        if "generateName" in cmd and "generateName" not in nmd:
            nmd["generateName"] = cmd["generateName"]
        nmd.pop("selfLink", None)
        nmd.pop("managedFields", None)
        if cmd.get("deletionTimestamp"):
            # finalizers may only be removed once deletion started
            added = [f for f in nmd.get("finalizers") or [] if f not in (cmd.get("finalizers") or [])]
            if added:
                raise ApiError(422, f"metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                               f"is being deleted, found new finalizers {added}", "Invalid")

    @staticmethod
    def _bump_generation(cur: Obj, new: Obj) -> None:
        if "generation" not in cur["metadata"]:
            return
        skip = ("metadata", "status", "kind", "apiVersion")
        if any(cur.get(k) != new.get(k) for k in set(cur) | set(new) if k not in skip):
            new["metadata"]["generation"] = int(cur["metadata"]["generation"]) + 1

    # --- delete ----------------------------------------------------------------------------------
    async def delete(
        self, rt: ResourceType, ns: str | None, name: str, options: Obj, *, dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """-> (object or its last state, deleted-now?)."""
        srt = self.storage_type(rt)
        key = srt.key(ns, name)
        if srt.plural == "priorityclasses":
            from tugboat.cluster.apiserver.kinds import SYSTEM_PRIORITY_CLASSES
            if name in SYSTEM_PRIORITY_CLASSES:
                raise ApiError(403, f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: the PriorityClass '
                               f'"{name}" is a system priority class and cannot be deleted', "Forbidden",
                               {"name": name, "group": "scheduling.k8s.io", "kind": "priorityclasses"})
        for _attempt in range(20):
            kv = await self.store.get(key)
            if kv is None:
                raise meta.not_found(rt.plural, rt.group, name)
            cur = load(kv)
            md = cur["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise meta.conflict(rt.plural, rt.group, name,
                                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                                    f"{md.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
                raise meta.conflict(rt.plural, rt.group, name,
                                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                    f"ResourceVersion in object meta: {md.get('resourceVersion')}")
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy not in (None, "Orphan", "Foreground", "Background"):
                raise meta.invalid("DeleteOptions", "", "", [("FieldValueNotSupported", "propagationPolicy",
                                   f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                                   f'"Orphan", "nil"')])
            new = copy.deepcopy(cur)
            nmd = new["metadata"]
            fins = list(nmd.get("finalizers") or [])
            if policy == "Orphan" and "orphan" not in fins and not md.get("deletionTimestamp"):
                fins.append("orphan")
            if policy == "Foreground" and "foregroundDeletion" not in fins and not md.get("deletionTimestamp"):
                fins.append("foregroundDeletion")
            if policy in ("Background", None) and md.get("deletionTimestamp"):
                # switching to background removes the orphan/foreground finalizers
                fins = [f for f in fins if f not in ("orphan", "foregroundDeletion")] if policy else fins
            grace = options.get("gracePeriodSeconds")
            graceful = False
            if srt.plural == "pods" and srt.group == "":
                spec, st = cur.get("spec") or {}, cur.get("status") or {}
                if grace is None:
                    grace = spec.get("terminationGracePeriodSeconds", 30)
                if spec.get("nodeName") and st.get("phase") not in ("Succeeded", "Failed") and grace > 0:
                    graceful = True
                elif grace == 0 or not spec.get("nodeName") or st.get("phase") in ("Succeeded", "Failed"):
                    grace = 0
            if srt.plural == "namespaces" and srt.group == "" and (new.get("spec") or {}).get("finalizers"):
                if not md.get("deletionTimestamp"):
                    nmd["deletionTimestamp"] = meta.now_rfc3339()
                    nmd["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    nmd["finalizers"] = fins or nmd.get("finalizers")
                    if not nmd.get("finalizers"):
                        nmd.pop("finalizers", None)
                    try:
                        return await self._write_terminating(rt, srt, key, kv, new, name, dry_run), False
                    except _Retry:
                        continue
                return self.to_view(rt, cur), False
            if fins or graceful:
                if md.get("deletionTimestamp") and fins == list(md.get("finalizers") or []) and not graceful:
                    return self.to_view(rt, cur), False
                if not md.get("deletionTimestamp") or graceful:
                    g = int(grace or 0) if graceful else 0
                    if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds") is not None \
                            and md["deletionGracePeriodSeconds"] <= g:
                        return self.to_view(rt, cur), False
                    nmd["deletionTimestamp"] = meta.now_rfc3339() if not graceful else \
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + g))
                    nmd["deletionGracePeriodSeconds"] = g
                if fins:
                    nmd["finalizers"] = fins
                else:
                    nmd.pop("finalizers", None)
                if "generation" in nmd and not md.get("deletionTimestamp"):
                    nmd["generation"] = int(nmd["generation"]) + 1
                try:
                    return await self._write_terminating(rt, srt, key, kv, new, name, dry_run), False
                except _Retry:
                    continue
            if dry_run:
                return self.to_view(rt, cur), True
            try:
                rev, last = await self.store.delete(key, kv.mod_revision)
            except RevisionMismatch:
                continue
            except KeyNotFound:
                raise meta.not_found(rt.plural, rt.group, name) from None
            out = load(last)
            out["metadata"]["resourceVersion"] = str(rev)
            return self.to_view(rt, out), True
        raise meta.conflict(rt.plural, rt.group, name)

    async def _write_terminating(
        self, rt: ResourceType, srt: ResourceType, key: str, kv: KeyValue, new: Obj, name: str, dry_run: bool,
    ) -> Obj:
        if dry_run:
            return self.to_view(rt, new)
        try:
            rev = await self.store.update(key, strip_for_storage(new), kv.mod_revision)
        except RevisionMismatch:
            raise _Retry() from None
        except KeyNotFound:
            raise meta.not_found(rt.plural, rt.group, name) from None
        new["metadata"]["resourceVersion"] = str(rev)
        return self.to_view(rt, new)


class _Retry(Exception):
    pass


_zero_status: dict[tuple[str, str, str], Obj] = {}


def required_zero_status(rt: ResourceType) -> Obj:
    key = (rt.group, rt.version, rt.plural)
    if key not in _zero_status:
        _zero_status[key] = _required_zero_status(rt)
    return dict(_zero_status[key])


def _required_zero_status(rt: ResourceType) -> Obj:
    """The status a new object starts with: required integer fields as 0 (what Go's zero values
    without omitempty look like on the wire, and what typed clients insist on)."""
    from tugboat.cluster.apiserver.schema import definitions

    defs = definitions()
    root = defs.get(rt.schema_name) or {}
    st = (root.get("p") or {}).get("status", "")
    d = defs.get(st[4:]) if st.startswith("ref:") else None
    if not d:
        return {}
    return {f: 0 for f in d.get("r", []) if d["p"].get(f) == "integer"}
