"""cgroup v2 manager: one directory in the unified hierarchy."""

from __future__ import annotations

import os
import time

from tugboat.runtime.cgroups import cpu, cpuset, devices, freezer, memory, pids
from tugboat.runtime.cgroups.common import read, read_int, read_pids, rmdir_retry, write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROLLER_MODULES = {"memory": memory, "cpu": cpu, "cpuset": cpuset, "pids": pids, "devices": devices}


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
        warnings: list[str] = []
        if resources.get("devices") and any(not r.get("allow") for r in resources["devices"]):
            warnings.append("device rules on cgroup v2 need a BPF program; not applied")
        for ctrl, mod in CONTROLLER_MODULES.items():
            for name, value in mod.v2(resources):
                if not os.path.exists(os.path.join(self.dir, name)):
                    warnings.append(f"cgroup v2 controller {ctrl} not available; {name} ignored")
                    continue
                write(self.dir, name, value)
        return warnings

    def add(self, pid: int) -> None:
        write(self.dir, "cgroup.procs", str(pid))

    def procs_files(self) -> list[str]:
        return [os.path.join(self.dir, "cgroup.procs")]

    def pids(self) -> list[int]:
        return read_pids(os.path.join(self.dir, "cgroup.procs"))

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
        rmdir_retry(self.dir)
