"""``events``: a container's resource statistics and OOM notifications, as runc prints them.

One JSON object per line: ``{"type":"stats","id":ID,"data":{...}}`` every ``--interval``
(default 5 s; ``--stats`` prints one and exits) and ``{"type":"oom","id":ID}`` when the kernel's
OOM killer acts in the container's memory cgroup. OOM notices come from an eventfd registered
on ``memory.oom_control`` through ``cgroup.event_control`` (cgroup v1), or from the
``oom_kill`` counter of ``memory.events`` (cgroup v2, re-read when inotify says the file
changed, or every 100 ms without inotify). The
stream ends when the container's cgroup is gone (it was deleted).
"""

from __future__ import annotations

import os
import select
import time

from tugboat.errors import Conflict, InvalidArgument, NotFound
from tugboat.runtime import fastjson as json
from tugboat.runtime.cgroups.common import read, read_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_DURATION_UNITS = (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


def parse_duration(text: str) -> float:
    """Seconds from a Go duration: "5s", "100ms", "1m30s", "1.5h", "250us"."""
    s = text.strip()
    if not s:
        raise InvalidArgument("invalid duration ''")
    total = 0.0
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        if j == i:
            raise InvalidArgument(f"invalid duration {text!r}")
        num = float(s[i:j])
        for unit, mult in sorted(_DURATION_UNITS, key=lambda u: -len(u[0])):
            if s.startswith(unit, j):
                total += num * mult
                i = j + len(unit)
                break
        else:
            raise InvalidArgument(f"invalid duration {text!r}: missing unit")
    if total <= 0:
        raise InvalidArgument(f"invalid duration {text!r}: must be greater than 0")
    return total


def _kv(dirpath: str, name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = read(dirpath, name)
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def _ints(dirpath: str, name: str) -> list[int]:
    try:
        return [int(x) for x in read(dirpath, name).split()]
    except (OSError, ValueError):
        return []


def _mem_entry(d: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, suffix in (("usage", "usage_in_bytes"), ("max", "max_usage_in_bytes"), ("failcnt", "failcnt"),
                        ("limit", "limit_in_bytes")):
        v = read_int(d, f"{prefix}.{suffix}")
        if v is not None:
            out[key] = v
    return out


def _blkio_entries(d: str, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = read(d, name)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
        except ValueError:
            continue
    return out


def stats_v1(dirs: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    cpu: dict[str, Any] = {"usage": {}, "throttling": {}}
    if "cpuacct" in dirs:
        d = dirs["cpuacct"]
        usage = cpu["usage"]
        total = read_int(d, "cpuacct.usage")
        if total is not None:
            usage["total"] = total
        usage["percpu"] = _ints(d, "cpuacct.usage_percpu")
        st = _kv(d, "cpuacct.stat")
        tick_ns = 10_000_000  # USER_HZ 100
        usage["kernel"] = st.get("system", 0) * tick_ns
        usage["user"] = st.get("user", 0) * tick_ns
    if "cpu" in dirs:
        st = _kv(dirs["cpu"], "cpu.stat")
        cpu["throttling"] = {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                             "throttled_time": st.get("throttled_time", 0)}
    data["cpu"] = cpu
    if "memory" in dirs:
        d = dirs["memory"]
        raw = _kv(d, "memory.stat")
        data["memory"] = {
            "cache": raw.get("cache", 0),
            "usage": _mem_entry(d, "memory"),
            "swap": _mem_entry(d, "memory.memsw"),
            "kernel": _mem_entry(d, "memory.kmem"),
            "kernelTCP": _mem_entry(d, "memory.kmem.tcp"),
            "raw": raw,
        }
    if "pids" in dirs:
        cur = read_int(dirs["pids"], "pids.current")
        lim = read_int(dirs["pids"], "pids.max")
        data["pids"] = {"current": cur or 0, "limit": 0 if lim is None or lim < 0 else lim}
    if "blkio" in dirs:
        d = dirs["blkio"]
        data["blkio"] = {
            "ioServiceBytesRecursive": _blkio_entries(d, "blkio.throttle.io_service_bytes_recursive"),
            "ioServicedRecursive": _blkio_entries(d, "blkio.throttle.io_serviced_recursive"),
        }
    data["hugetlb"] = {}
    if "hugetlb" in dirs:
        d = dirs["hugetlb"]
        try:
            names = os.listdir(d)
        except OSError:
            names = []
        for n in sorted(names):
            if n.startswith("hugetlb.") and n.endswith(".usage_in_bytes"):
                size = n[len("hugetlb."):-len(".usage_in_bytes")]
                data["hugetlb"][size] = {"usage": read_int(d, n) or 0,
                                         "max": read_int(d, f"hugetlb.{size}.max_usage_in_bytes") or 0,
                                         "failcnt": read_int(d, f"hugetlb.{size}.failcnt") or 0}
    return data


def stats_v2(d: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    st = _kv(d, "cpu.stat")
    data["cpu"] = {
        "usage": {"total": st.get("usage_usec", 0) * 1000, "kernel": st.get("system_usec", 0) * 1000,
                  "user": st.get("user_usec", 0) * 1000},
        "throttling": {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                       "throttled_time": st.get("throttled_usec", 0) * 1000},
    }
    raw = _kv(d, "memory.stat")
    mem_limit = read_int(d, "memory.max")
    swap_limit = read_int(d, "memory.swap.max")
    data["memory"] = {
        "cache": raw.get("file", 0),
        "usage": {"usage": read_int(d, "memory.current") or 0, "limit": mem_limit if mem_limit and mem_limit > 0 else 0,
                  "max": read_int(d, "memory.peak") or 0, "failcnt": _kv(d, "memory.events").get("max", 0)},
        "swap": {"usage": read_int(d, "memory.swap.current") or 0,
                 "limit": swap_limit if swap_limit and swap_limit > 0 else 0},
        "raw": raw,
    }
    cur = read_int(d, "pids.current")
    lim = read_int(d, "pids.max")
    data["pids"] = {"current": cur or 0, "limit": 0 if lim is None or lim < 0 else lim}
    data["blkio"] = {}
    data["hugetlb"] = {}
    return data


def container_stats(mgr: Any) -> dict[str, Any]:
    """runc's ``types.Stats`` shape (the subset this host's cgroups can fill)."""
    if getattr(mgr, "version", 1) == 2:
        return stats_v2(mgr.dir)
    return stats_v1({k: v for k, v in mgr.dirs().items() if k})


class OOMWatch:
    """Readable fd + check for OOM kills in a container's memory cgroup."""

    def __init__(self, mgr: Any) -> None:
        self.fd: int | None = None
        self.events_file: str | None = None
        self.kills = 0
        self.gone_path: str = ""
        if getattr(mgr, "version", 1) == 2:
            self.events_file = os.path.join(mgr.dir, "memory.events")
            self.gone_path = mgr.dir
            self.kills = self._v2_kills()
            self.fd = _inotify(self.events_file)  # None: polled instead
            return
        d = mgr.dirs().get("memory")
        if d is None:
            return
        self.gone_path = os.path.join(d, "cgroup.event_control")
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            ofd = os.open(os.path.join(d, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                cfd = os.open(self.gone_path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(cfd, f"{efd} {ofd}".encode())
                finally:
                    os.close(cfd)
            finally:
                os.close(ofd)
        except OSError:
            os.close(efd)
            return
        self.fd = efd

    def _v2_kills(self) -> int:
        if self.events_file is None:
            return 0
        try:
            with open(self.events_file) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def poll_timeout(self, wanted: float) -> float:
        return min(wanted, 0.1) if self.events_file is not None and self.fd is None else wanted

    def check(self, readable: bool) -> int:
        """New OOM kills since the last check (after the fd was readable, or a v2 re-read)."""
        if self.fd is not None and readable and self.events_file is not None:
            try:
                os.read(self.fd, 4096)  # inotify events: drained; the counter says what happened
            except BlockingIOError:
                pass
        if self.fd is not None and readable and self.events_file is None:
            try:
                n = int.from_bytes(os.read(self.fd, 8), "little")
            except BlockingIOError:
                return 0
            return n if os.path.exists(self.gone_path) else 0
        if self.events_file is not None:
            now = self._v2_kills()
            new, self.kills = max(0, now - self.kills), now
            return new
        return 0

    def gone(self) -> bool:
        return bool(self.gone_path) and not os.path.exists(self.gone_path)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _inotify(path: str) -> int | None:
    """An inotify fd watching ``path`` for modification (cgroup v2 notifies on memory.events)."""
    try:
        from tugboat.runtime import kernel as k

        fd = k._fn("inotify_init1")(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            return None
        if k._fn("inotify_add_watch")(fd, path.encode(), 0x2) < 0:  # IN_MODIFY
            os.close(fd)
            return None
        return int(fd)
    except (OSError, AttributeError):
        return None


def stream(
    rt: Any, container_id: str, *, interval: float = 5.0, stats_only: bool = False,
    emit: Callable[[str], None] | None = None,
) -> int:
    """Print events for a container until its cgroup is deleted (``stats_only``: one and return)."""
    import sys

    def out(obj: dict[str, Any]) -> None:
        line = json.dumps(obj, compact=True)
        if emit is not None:
            emit(line)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    sd, record = rt._load(container_id)
    if rt._status(sd, record) == "stopped":
        raise Conflict(f"container with id {container_id} is not running")
    mgr = rt._manager(record)
    if mgr is None:
        raise NotFound(f"container {container_id} has no cgroup")
    if stats_only:
        out({"type": "stats", "id": container_id, "data": container_stats(mgr)})
        return 0
    watch = OOMWatch(mgr)
    try:
        next_tick = time.monotonic() + interval
        while True:
            wait = max(0.0, next_tick - time.monotonic())
            readable = False
            if watch.fd is not None:
                readable = bool(select.select([watch.fd], [], [], wait)[0])
            else:
                time.sleep(watch.poll_timeout(wait))
            for _ in range(watch.check(readable)):
                out({"type": "oom", "id": container_id})
            if watch.gone() or not _exists(rt, container_id):
                return 0
            if time.monotonic() >= next_tick:
                next_tick += interval
                try:
                    data = container_stats(mgr)
                except OSError:
                    continue
                out({"type": "stats", "id": container_id, "data": data})
    finally:
        watch.close()


def _exists(rt: Any, container_id: str) -> bool:
    try:
        rt._load(container_id)
    except NotFound:
        return False
    return True
