"""cgroups v1 and v2 behind one manager interface (one module per controller).

``detect()`` reads /proc/self/mountinfo: a cgroup2 at the cgroup root means unified mode; v1
hierarchies (possibly with a controller-less or hugetlb-only cgroup2 beside them, as on this
machine) mean legacy/hybrid mode, where resources go to the v1 files and the container also
gets a directory in the cgroup2 so nothing is left running at its root.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    Protocol = object


class Mounts:
    """Where the hierarchies are: v1 controller name -> mount point, and the cgroup2 mount point."""

    def __init__(self, v1: dict[str, str] | None = None, unified: str | None = None) -> None:
        self.v1: dict[str, str] = v1 if v1 is not None else {}
        self.unified = unified

    @property
    def mode(self) -> str:
        if self.v1:
            return "hybrid" if self.unified else "legacy"
        return "unified" if self.unified else "none"


def parse_mountinfo(text: str) -> Mounts:
    m = Mounts()
    for line in text.splitlines():
        parts = line.split(" - ", 1)
        if len(parts) != 2:
            continue
        left, right = parts[0].split(), parts[1].split()
        if len(right) < 3 or len(left) < 5:
            continue
        fstype, mountpoint = right[0], left[4]
        if fstype == "cgroup2":
            if m.unified is None:
                m.unified = mountpoint
        elif fstype == "cgroup":
            for opt in right[2].split(","):
                if opt in ("rw", "ro") or (opt.startswith("name=") and opt != "name=systemd"):
                    continue
                if opt == "name=systemd":
                    m.v1.setdefault("name=systemd", mountpoint)
                elif "=" not in opt and opt not in m.v1 and opt not in ("relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "xattr", "noprefix"):
                    m.v1[opt] = mountpoint
    return m


_DETECTED: list[Mounts] = []


def detect() -> Mounts:
    if not _DETECTED:
        with open("/proc/self/mountinfo") as f:
            _DETECTED.append(parse_mountinfo(f.read()))
    return _DETECTED[0]


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as controller -> path ("" key for the cgroup2 entry)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        try:
            _, ctrls, path = line.split(":", 2)
        except ValueError:
            continue
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            out[c] = path
    return out


_DEV = ("major", "minor")
# OCI LinuxResources field names: nested objects, and lists of objects ("[]" suffix)
_SCHEMA: dict[str, Any] = {
    "devices[]": ("allow", "type", "major", "minor", "access"),
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
               "useHierarchy", "checkBeforeUpdate"),
    "cpu": ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle"),
    "pids": ("limit",),
    "blockIO": {"weight": None, "leafWeight": None, "weightDevice[]": (*_DEV, "weight", "leafWeight"),
                "throttleReadBpsDevice[]": (*_DEV, "rate"), "throttleWriteBpsDevice[]": (*_DEV, "rate"),
                "throttleReadIOPSDevice[]": (*_DEV, "rate"), "throttleWriteIOPSDevice[]": (*_DEV, "rate")},
    "hugepageLimits[]": ("pageSize", "limit"),
    "network": {"classID": None, "priorities[]": ("name", "priority")},
    "rdma": None,
    "unified": None,
}


def _norm(obj: Any, schema: Any) -> Any:
    if schema is None or not isinstance(obj, dict):
        return obj
    fields = {n: None for n in schema} if isinstance(schema, tuple) else schema
    canon = {n.rstrip("[]").lower(): n for n in fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = canon.get(key.lower())
        if name is None:
            out[key] = value  # unknown: kept as is
            continue
        sub = fields[name]
        plain = name.rstrip("[]")
        if name.endswith("[]") and isinstance(value, list):
            value = [_norm(v, sub) for v in value]
        elif isinstance(value, dict) and isinstance(out.get(plain), dict):
            value = {**out[plain], **_norm(value, sub)}  # "cpu" and "CPU" both given: merged
        else:
            value = _norm(value, sub)
        out[plain] = value
    return out


def normalize_resources(res: dict[str, Any] | None) -> dict[str, Any]:
    """``linux.resources`` with OCI's field names, whatever their case (runc decodes JSON with
    Go's case-insensitive matching, so ``{"CPU": {"Cpus": "0"}}`` means ``{"cpu": {"cpus": "0"}}``)."""
    return _norm(res or {}, _SCHEMA)


class Manager(Protocol):
    """What the runtime needs from a cgroup, whichever version."""

    path: str

    def create(self) -> None: ...
    def apply(self, resources: dict[str, Any]) -> list[str]: ...
    def procs_files_for(self, sub: dict[str, str]) -> list[str]: ...
    def add(self, pid: int) -> None: ...
    def procs_files(self) -> list[str]: ...
    def pids(self) -> list[int]: ...
    def freeze(self, frozen: bool) -> None: ...
    def frozen(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def destroy(self) -> None: ...


def resolve_path(cgroups_path: str | None, container_id: str, parent: str | None, own: dict[str, str]) -> dict[str, str]:
    """Per-hierarchy absolute cgroup path for a container.

    An absolute ``cgroupsPath`` is used as is; a relative one, or none with no ``parent``, is
    taken relative to the caller's own cgroup in each hierarchy (runc's behaviour); with no
    ``cgroupsPath`` and a ``parent`` (engine use) the path is ``<parent>/<id>``.
    """
    out: dict[str, str] = {}
    keys = set(own) | {""}
    for key in keys:
        base = own.get(key, "/")
        if cgroups_path and cgroups_path.startswith("/"):
            path = cgroups_path
        elif cgroups_path:
            path = os.path.join(base, cgroups_path)
        elif parent:
            path = os.path.join(parent, container_id)
        else:
            path = os.path.join(base, container_id)
        out[key] = os.path.normpath("/" + path.lstrip("/"))
    return out


def new_manager(
    cgroups_path: str | None, container_id: str, *, parent: str | None = None, mounts: Mounts | None = None
) -> Manager:
    mounts = mounts or detect()
    with open("/proc/self/cgroup") as f:
        own = parse_proc_cgroup(f.read())
    paths = resolve_path(cgroups_path, container_id, parent, own)
    if mounts.mode == "unified":
        from tugboat.runtime.cgroups.v2 import V2Manager

        return V2Manager(mounts.unified or "/sys/fs/cgroup", paths[""])
    from tugboat.runtime.cgroups.v1 import V1Manager

    return V1Manager(mounts, paths)


def manager_from_state(record: dict[str, Any]) -> Manager | None:
    """Rebuild the manager saved in a container's state (``cgroup`` key)."""
    info = record.get("cgroup")
    if not info:
        return None
    if info.get("version") == 2:
        from tugboat.runtime.cgroups.v2 import V2Manager

        return V2Manager(info["mount"], info["path"])
    from tugboat.runtime.cgroups.v1 import V1Manager

    m = Mounts(v1=dict(info["mounts"]), unified=info.get("unified"))
    return V1Manager(m, dict(info["paths"]))
