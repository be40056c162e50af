"""cgroup v2 manager: one directory in the unified hierarchy."""

from __future__ import annotations

import errno
import os
import time

from tugboat.runtime.cgroups import (
    blkio,
    cpu,
    cpuset,
    devices,
    freezer,
    hugetlb,
    memory,
    normalize_resources,
    pids,
)
from tugboat.runtime.cgroups.common import read, read_int, read_pids_recursive, rmdir_tree, write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROLLER_MODULES = {"memory": memory, "cpu": cpu, "cpuset": cpuset, "pids": pids, "devices": devices,
                      "io": blkio, "hugetlb": hugetlb}


class V2Manager:
    version = 2

    def __init__(self, mount: str, path: str) -> None:
        self.mount = mount
        self.path = path
        self.dir = os.path.join(mount, path.lstrip("/"))

    def describe(self) -> dict[str, Any]:
        return {"version": 2, "mount": self.mount, "path": self.path}

    def create(self) -> None:
        # enable the controllers we need down the tree
        rel = os.path.relpath(self.dir, self.mount)
        cur = self.mount
        parts = [] if rel == "." else rel.split("/")
        for part in parts:
            try:
                avail = read(cur, "cgroup.controllers").split()
                want = [c for c in ("cpu", "cpuset", "memory", "pids", "io", "hugetlb") if c in avail]
                if want:
                    write(cur, "cgroup.subtree_control", " ".join("+" + c for c in want))
            except OSError:
                pass
            cur = os.path.join(cur, part)
            os.makedirs(cur, exist_ok=True)

    def apply(self, resources: dict[str, Any]) -> list[str]:
        """Write resource limits (also for ``update``: only the fields present are written);
        ``unified`` entries are written last, overriding the converted OCI fields."""
        resources = normalize_resources(resources)
        warnings: list[str] = []
        if resources.get("devices") is not None:
            from tugboat.runtime.cgroups import devices_bpf

            rules = devices_bpf.rules_with_defaults(resources["devices"])
            devices_bpf.load_and_attach(self.dir, devices_bpf.compile_rules(rules))
        for ctrl, mod in CONTROLLER_MODULES.items():
            for name, value in mod.v2(resources):
                if not os.path.exists(os.path.join(self.dir, name)):
                    if name != "io.bfq.weight":
                        warnings.append(f"cgroup v2 controller {ctrl} not available; {name} ignored")
                    continue
                write(self.dir, name, value)
        for name, value in (resources.get("unified") or {}).items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"invalid configuration: unified key {name!r} is not a cgroup file name")
            try:
                write(self.dir, name, str(value))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise ValueError(f"invalid configuration: unified resource {name!r}: the controller is "
                                     "not enabled or the file does not exist") from None
                raise
        return warnings

    def add(self, pid: int) -> None:
        write(self.dir, "cgroup.procs", str(pid))

    def procs_files(self) -> list[str]:
        return [os.path.join(self.dir, "cgroup.procs")]

    def procs_files_for(self, sub: dict[str, str]) -> list[str]:
        """``exec --cgroup``: cgroup v2 has one hierarchy, so only a path with no controller
        (or "" key) counts. Raises if it does not exist."""
        rel = sub.get("", "")
        for ctrl in sub:
            if ctrl:
                raise ValueError(f"unknown controller {ctrl!r} (cgroup v2 takes a path alone)")
        path = os.path.join(self.dir, rel, "cgroup.procs") if rel else os.path.join(self.dir, "cgroup.procs")
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, f"adding pid to cgroups: open {path}: no such file or directory")
        return [path]

    def pids(self) -> list[int]:
        return sorted(set(read_pids_recursive(self.dir)))

    def freeze(self, frozen: bool) -> None:
        name, value = freezer.v2(frozen)
        write(self.dir, name, value)
        for _ in range(1000):
            if f"frozen {value}" in read(self.dir, "cgroup.events"):
                return
            time.sleep(0.001)

    def frozen(self) -> bool:
        try:
            return read(self.dir, "cgroup.freeze") == "1"
        except OSError:
            return False

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, f in (("memory_usage", "memory.current"), ("memory_limit", "memory.max"),
                       ("pids_current", "pids.current"), ("pids_limit", "pids.max")):
            v = read_int(self.dir, f)
            if v is not None:
                out[key] = v
        try:
            for line in read(self.dir, "cpu.stat").splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    out["cpu_usage_ns"] = int(v) * 1000
        except OSError:
            pass
        return out

    def destroy(self) -> None:
        rmdir_tree(self.dir)
