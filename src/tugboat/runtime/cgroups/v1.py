"""cgroup v1 manager: one directory per hierarchy, resources written per controller module."""

from __future__ import annotations

import errno
import os
import time

from tugboat.runtime.cgroups import (
    Mounts,
    blkio,
    cpu,
    cpuset,
    devices,
    freezer,
    hugetlb,
    memory,
    net,
    normalize_resources,
    pids,
)
from tugboat.runtime.cgroups.common import read, read_int, read_pids_recursive, rmdir_tree, write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROLLER_MODULES = {"memory": memory, "cpu": cpu, "cpuset": cpuset, "pids": pids, "devices": devices,
                      "blkio": blkio, "hugetlb": hugetlb, "net_cls": net.net_cls, "net_prio": net.net_prio}
# file -> the BFQ scheduler's file, used when the CFQ one is absent (runc does the same)
_BFQ = {"blkio.weight": "blkio.bfq.weight", "blkio.weight_device": "blkio.bfq.weight_device"}


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
        """Write resource limits; returns warnings (e.g. swap accounting absent).

        Also used by ``update``: only the fields present are written (0 means "unchanged" for
        the numbers runc treats so)."""
        resources = normalize_resources(resources)
        if resources.get("unified"):
            raise ValueError("invalid configuration: linux.resources.unified needs cgroup v2, "
                             "and this host's controllers are on cgroup v1")
        warnings: list[str] = []
        for ctrl, mod in CONTROLLER_MODULES.items():
            writes = mod.v1(resources)
            if not writes:
                continue
            mnt = self.mounts.v1.get(ctrl)  # (co-mounted controllers share one directory)
            d = os.path.join(mnt, self.paths.get(ctrl, self.path).lstrip("/")) if mnt else None
            if d is None:
                warnings.append(f"cgroup controller {ctrl} is not mounted; its limits are ignored")
                continue
            self._write_all(ctrl, d, writes, warnings)
        return warnings

    def _write_all(self, ctrl: str, d: str, writes: list[tuple[str, str]], warnings: list[str]) -> None:
        if ctrl == "memory":
            self._write_memory(d, writes, warnings)
            return
        if ctrl == "cpu":
            self._write_cpu(d, writes)
            return
        for name, value in writes:
            if name in _BFQ and not os.path.exists(os.path.join(d, name)):
                name = _BFQ[name]
            write(d, name, value)

    @staticmethod
    def _write_memory(d: str, writes: list[tuple[str, str]], warnings: list[str]) -> None:
        """limit and memsw in the order the kernel accepts (memsw >= limit at every step)."""
        vals = dict(writes)
        limit = vals.pop("memory.limit_in_bytes", None)
        swap = vals.pop("memory.memsw.limit_in_bytes", None)
        has_memsw = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
        if swap is not None and not has_memsw:
            warnings.append("swap accounting is not enabled; the memory swap limit is ignored")
            swap = None
        if limit == "-1" and swap is None and has_memsw:
            swap = "-1"  # no memory limit means no memory+swap limit either
        swap_first = False
        if limit is not None and swap is not None:
            cur = read_int(d, "memory.limit_in_bytes")
            swap_first = swap == "-1" or (cur is not None and cur < int(swap))
        order = ([("memory.memsw.limit_in_bytes", swap), ("memory.limit_in_bytes", limit)] if swap_first
                 else [("memory.limit_in_bytes", limit), ("memory.memsw.limit_in_bytes", swap)])
        for name, value in order + list(vals.items()):
            if value is not None:
                write(d, name, value)

    @staticmethod
    def _write_cpu(d: str, writes: list[tuple[str, str]]) -> None:
        """A shorter period can be refused (EINVAL) until the quota is lowered: retry it after."""
        vals = dict(writes)
        period = vals.pop("cpu.cfs_period_us", None)
        quota = vals.pop("cpu.cfs_quota_us", None)
        for name in ("cpu.rt_period_us", "cpu.rt_runtime_us"):
            if name in vals:
                write(d, name, vals.pop(name))
        retry = None
        if period is not None:
            try:
                write(d, "cpu.cfs_period_us", period)
            except OSError as e:
                if e.errno != errno.EINVAL or quota is None:
                    raise
                retry = period
        if quota is not None:
            write(d, "cpu.cfs_quota_us", quota)
            if retry is not None:
                write(d, "cpu.cfs_period_us", retry)
        for name, value in vals.items():
            write(d, name, value)

    def add(self, pid: int) -> None:
        for ctrl, d in self.dirs().items():
            name = "cgroup.procs"
            write(d, name, str(pid))
            del ctrl

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs().values()]

    def procs_files_for(self, sub: dict[str, str]) -> list[str]:
        """cgroup.procs files for ``exec --cgroup``: ``sub`` maps a controller (or "" for every
        hierarchy) to a path relative to the container's cgroup. Raises if one is missing."""
        known = set(self.mounts.v1) | {c.replace("name=", "") for c in self.mounts.v1}
        for ctrl in sub:
            if ctrl and ctrl not in known:
                raise ValueError(f"unknown controller {ctrl!r}")
        out: list[str] = []
        seen: set[str] = set()
        for ctrl, mnt in [*self.mounts.v1.items(), *([("", self.mounts.unified)] if self.mounts.unified else [])]:
            rel = sub.get(ctrl, sub.get(ctrl.replace("name=", ""), sub.get("", "")))
            base = os.path.join(mnt, self.paths.get(ctrl, self.path).lstrip("/"))
            path = os.path.join(base, rel, "cgroup.procs") if rel else os.path.join(base, "cgroup.procs")
            if path in seen:
                continue
            seen.add(path)
            if rel and not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, f"adding pid to cgroups: open {path}: no such file or directory")
            out.append(path)
        return out

    def pids(self) -> list[int]:
        """Every process in the container's cgroup, sub-cgroups included (runc's GetAllPids).
        One hierarchy is enough: a process is in exactly one cgroup of each, and every process
        of the container is somewhere below the container's cgroup in all of them."""
        d = self.dirs()
        key = "pids" if "pids" in d else ("memory" if "memory" in d else next(iter(d), None))
        if key is None:
            return []
        return sorted(set(read_pids_recursive(d[key])))

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
                rmdir_tree(d)
            except OSError as e:
                errors.append(str(e))
        if errors:
            raise OSError(16, "; ".join(errors))
