"""``docker stats`` JSON from the runtime's cgroup figures."""

from __future__ import annotations

import os
from typing import Any

from tugboat.engine.util import ZERO_TIME, now_rfc3339


def system_cpu_ns() -> int:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
        ticks = sum(int(x) for x in fields)
        return ticks * (1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100))
    except (OSError, ValueError):
        return 0


def net_stats(pid: int) -> dict:
    """Per-interface counters of the container's network namespace (``/proc/<pid>/net/dev``)."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        v = rest.split()
        if name == "lo" or len(v) < 16:
            continue
        out[name] = {"rx_bytes": int(v[0]), "rx_packets": int(v[1]), "rx_errors": int(v[2]),
                     "rx_dropped": int(v[3]), "tx_bytes": int(v[8]), "tx_packets": int(v[9]),
                     "tx_errors": int(v[10]), "tx_dropped": int(v[11])}
    return out


def docker_stats(engine: Any, c: Any, prev: dict | None) -> dict:
    raw = engine.runtime.stats(c.id, int(c.state.get("Pid") or 0)) if c.running else {}
    mem_usage = int(raw.get("memory_usage") or raw.get("memory", {}).get("usage", 0) or 0) if raw else 0
    mem_limit = int(raw.get("memory_limit") or raw.get("memory", {}).get("limit", 0) or 0) if raw else 0
    if not mem_limit or mem_limit > (1 << 60):
        try:
            with open("/proc/meminfo") as f:
                mem_limit = int(f.readline().split()[1]) * 1024
        except OSError:
            mem_limit = 0
    cpu = int(raw.get("cpu_usage_ns") or raw.get("cpu", {}).get("usage", 0) or 0) if raw else 0
    pids = int(raw.get("pids_current") or raw.get("pids", {}).get("current", 0) or 0) if raw else 0
    ncpu = os.cpu_count() or 1
    cur = {
        "read": now_rfc3339() if c.running else ZERO_TIME,
        "preread": (prev or {}).get("read", ZERO_TIME),
        "pids_stats": {"current": pids} if c.running else {},
        "blkio_stats": {"io_service_bytes_recursive": None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {
            "cpu_usage": {"total_usage": cpu, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": ncpu,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "precpu_stats": (prev or {}).get("cpu_stats") or {
            "cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {"usage": mem_usage, "limit": mem_limit, "stats": {}} if c.running else {},
        "name": c.name,
        "id": c.id,
    }
    if c.running:
        cur["networks"] = net_stats(int(c.state.get("Pid") or 0))
    return cur
