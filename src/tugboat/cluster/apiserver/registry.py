"""Resource types: what the generic machinery needs to serve one kind.

Adding a kind is adding one :class:`ResourceType` to :data:`REGISTRY` (see :mod:`.kinds`): its
names, scope, defaulting, validation, table columns, field selectors and subresources. The schema
for OpenAPI/explain/field validation comes from ``schemas.json`` by the kind's schema name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Cause = tuple[str, str, str]  # (reason, field path, message)

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description or self.name, "priority": self.priority}


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    # subresource name -> (group, version, kind) of what it returns, verbs
    subresources: dict[str, tuple[tuple[str, str, str], list[str]]] = field(default_factory=dict)
    # storage: objects of several versions share one key space (e.g. HPA v1 and v2)
    storage_resource: str = ""
    storage_group: str | None = None
    to_storage: Callable[[Obj], Obj] | None = None  # this version -> storage version
    from_storage: Callable[[Obj], Obj] | None = None  # storage version -> this version
    defaults: Callable[[Obj], None] | None = None
    validate: Callable[[Obj, Obj | None], list[Cause]] | None = None
    columns: list[Column] = field(default_factory=list)
    row: Callable[[Obj], list[Any]] | None = None
    fields: Callable[[Obj], dict[str, str]] | None = None  # extra field selector values
    field_names: set[str] = field(default_factory=set)
    reset_status_on_create: bool = True
    status_subresource: bool = False
    schema_name: str = ""  # key in schemas.json (e.g. io.k8s.api.apps.v1.Deployment)
    list_kind: str = ""
    preferred: bool = True  # the group's preferred version serves this resource

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.storage_resource = self.storage_resource or self.plural
        self.list_kind = self.list_kind or self.kind + "List"
        self.status_subresource = "status" in self.subresources

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    def key_prefix(self, namespace: str | None) -> str:
        g = self.storage_group if self.storage_group is not None else self.group
        base = f"/registry/{g or 'core'}/{self.storage_resource}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, namespace: str | None, name: str) -> str:
        return self.key_prefix(namespace) + name


class Registry:
    def __init__(self) -> None:
        self.by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self.groups: dict[str, list[str]] = {}  # group -> versions, preferred first

    def add(self, rt: ResourceType) -> ResourceType:
        self.by_gvr[(rt.group, rt.version, rt.plural)] = rt
        vs = self.groups.setdefault(rt.group, [])
        if rt.version not in vs:
            if rt.preferred:
                vs.insert(0, rt.version)
            else:
                vs.append(rt.version)
        return rt

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.by_gvr.get((group, version, plural))

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self.by_gvr.items() if g == group and v == version]

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for rt in self.by_gvr.values():
            if rt.group == group and rt.kind == kind and rt.preferred:
                return rt
        for rt in self.by_gvr.values():
            if rt.group == group and rt.kind == kind:
                return rt
        return None
