"""cgroup v1 manager: one directory per hierarchy, resources written per controller module."""

from __future__ import annotations

import os
import time

from tugboat.runtime.cgroups import Mounts, cpu, cpuset, devices, freezer, memory, pids
from tugboat.runtime.cgroups.common import read, read_int, read_pids, rmdir_retry, write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROLLER_MODULES = {"memory": memory, "cpu": cpu, "cpuset": cpuset, "pids": pids, "devices": devices}


class V1Manager:
    version = 1

    def __init__(self, mounts: Mounts, paths: dict[str, str]) -> None:
        self.mounts = mounts
        self.paths = paths  # controller (or "" for cgroup2) -> cgroup path
        self.path = paths.get("memory") or paths.get("") or "/"
        self._created: list[str] = []

    def dirs(self) -> dict[str, str]:
        """Controller -> directory; hierarchies sharing a mount point appear once."""
        out: dict[str, str] = {}
        seen: set[str] = set()
        for ctrl, mnt in self.mounts.v1.items():
            d = os.path.join(mnt, self.paths.get(ctrl, self.path).lstrip("/"))
            if d not in seen:
                seen.add(d)
                out[ctrl] = d
        if self.mounts.unified:
            out[""] = os.path.join(self.mounts.unified, self.paths.get("", self.path).lstrip("/"))
        return out

    def describe(self) -> dict[str, Any]:
        return {"version": 1, "mounts": self.mounts.v1, "unified": self.mounts.unified, "paths": self.paths}

    def create(self) -> None:
        for ctrl, d in self.dirs().items():
            if ctrl == "cpuset":
                self._make_cpuset(d)
            elif not os.path.isdir(d):
                os.makedirs(d, exist_ok=True)
                self._created.append(d)

    def _make_cpuset(self, d: str) -> None:
        # a new v1 cpuset starts with empty cpus/mems: copy them down from the parent
        mnt = self.mounts.v1["cpuset"]
        rel = os.path.relpath(d, mnt)
        cur = mnt
        for part in ([] if rel == "." else rel.split("/")):
            parent, cur = cur, os.path.join(cur, part)
            if not os.path.isdir(cur):
                os.mkdir(cur)
                self._created.append(cur)
            for f in ("cpuset.cpus", "cpuset.mems"):
                try:
                    if not read(cur, f):
                        write(cur, f, read(parent, f))
                except OSError:
                    pass

    def apply(self, resources: dict[str, Any]) -> list[str]:
        """Write resource limits; returns warnings (e.g. swap accounting absent)."""
        warnings: list[str] = []
        dirs = self.dirs()
        for ctrl, mod in CONTROLLER_MODULES.items():
            writes = mod.v1(resources)
            if not writes:
                continue
            d = dirs.get(ctrl)
            if d is None:
                warnings.append(f"cgroup controller {ctrl} is not mounted; its limits are ignored")
                continue
            self._write_all(ctrl, d, writes, warnings)
        return warnings

    def _write_all(self, ctrl: str, d: str, writes: list[tuple[str, str]], warnings: list[str]) -> None:
        pending = list(writes)
        if ctrl == "memory":
            # raising limit and memsw together must go in the order the kernel accepts
            names = [n for n, _ in pending]
            if "memory.memsw.limit_in_bytes" in names and not os.path.exists(
                os.path.join(d, "memory.memsw.limit_in_bytes")
            ):
                warnings.append("swap accounting is not enabled; the memory swap limit is ignored")
                pending = [(n, v) for n, v in pending if n != "memory.memsw.limit_in_bytes"]
        for name, value in pending:
            try:
                write(d, name, value)
            except OSError:
                if ctrl == "memory" and name == "memory.limit_in_bytes":
                    # limit above the current memsw limit: set memsw first, then retry
                    memsw = dict(pending).get("memory.memsw.limit_in_bytes")
                    if memsw:
                        write(d, "memory.memsw.limit_in_bytes", memsw)
                        write(d, name, value)
                        continue
                raise

    def add(self, pid: int) -> None:
        for ctrl, d in self.dirs().items():
            name = "cgroup.procs"
            write(d, name, str(pid))
            del ctrl

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs().values()]

    def pids(self) -> list[int]:
        d = self.dirs()
        key = "pids" if "pids" in d else ("memory" if "memory" in d else next(iter(d), None))
        if key is None:
            return []
        return read_pids(os.path.join(d[key], "cgroup.procs"))

    def freeze(self, frozen: bool) -> None:
        d = self.dirs().get("freezer")
        if d is None:
            raise OSError(95, "cgroup: the freezer controller is not mounted")
        name, value = freezer.v1(frozen)
        write(d, name, value)
        for _ in range(1000):
            state = read(d, name)
            if state == value:
                return
            if frozen and state == "FREEZING":
                time.sleep(0.001)
                write(d, name, value)
                continue
            time.sleep(0.001)

    def frozen(self) -> bool:
        d = self.dirs().get("freezer")
        if d is None:
            return False
        try:
            return read(d, "freezer.state") in ("FROZEN", "FREEZING")
        except OSError:
            return False

    def stats(self) -> dict[str, int]:
        d = self.dirs()
        out: dict[str, int] = {}
        if "memory" in d:
            for key, f in (("memory_usage", "memory.usage_in_bytes"), ("memory_limit", "memory.limit_in_bytes"),
                           ("memory_max_usage", "memory.max_usage_in_bytes")):
                v = read_int(d["memory"], f)
                if v is not None:
                    out[key] = v
            try:
                for line in read(d["memory"], "memory.stat").splitlines():
                    k, _, v = line.partition(" ")
                    if k in ("cache", "rss", "total_inactive_file"):
                        out[f"memory_stat_{k}"] = int(v)
            except OSError:
                pass
        if "cpuacct" in d:
            v = read_int(d["cpuacct"], "cpuacct.usage")
            if v is not None:
                out["cpu_usage_ns"] = v
        if "pids" in d:
            for key, f in (("pids_current", "pids.current"), ("pids_limit", "pids.max")):
                v = read_int(d["pids"], f)
                if v is not None:
                    out[key] = v
        return out

    def destroy(self) -> None:
        errors: list[str] = []
        for d in self.dirs().values():
            try:
                rmdir_retry(d)
            except OSError as e:
                errors.append(str(e))
        if errors:
            raise OSError(16, "; ".join(errors))
