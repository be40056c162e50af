"""metrics.k8s.io usage from cgroups: PodMetrics per running pod, NodeMetrics for the node.

CPU is a rate: the difference of cumulative ``cpuacct.usage`` between two collections divided by
the wall time between them. As metrics-server, a pod is reported only once every container of it
has two samples (a first sample has no rate: reporting it as 0 made a busy new pod look idle to
the HPA), and ``window`` is the time between the samples. Memory is the working set: usage minus
inactive file pages, as the kubelet computes it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tugboat.cluster.client.util import now as kube_now
from tugboat.errors import TugError

if TYPE_CHECKING:
    from tugboat.cluster.node.agent import NodeAgent

_prev: dict[str, tuple[float, int]] = {}
_node_prev: list[float] = []


def _working_set(st: dict[str, Any]) -> int:
    usage = int(st.get("memory_usage") or 0)
    inactive = int(st.get("memory_stat_total_inactive_file") or st.get("memory_stat_inactive_file") or 0)
    return max(0, usage - inactive)


def _cpu_rate(cid: str, used_ns: int, t: float) -> tuple[int, float] | None:
    """(nanocores, seconds since the previous sample), or None for a container's first sample."""
    prev = _prev.get(cid)
    _prev[cid] = (t, used_ns)
    if prev is None or t <= prev[0]:
        return None
    if used_ns < prev[1]:  # the counter went back (a restarted container under the same id)
        return None
    return int((used_ns - prev[1]) / (t - prev[0])), t - prev[0]


def node_usage() -> tuple[int, int]:
    """(cpu nanocores, memory working set bytes) of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    t = time.monotonic()
    hz = 100
    cpu = 0
    if _node_prev:
        dt = t - _node_prev[0]
        if dt > 0:
            cpu = int((busy - _node_prev[1]) / hz / dt * 1e9)
    _node_prev[:] = [t, busy]
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0]) * 1024
    return max(0, cpu), mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)


def collect(agent: NodeAgent) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ts = kube_now()
    pods: list[dict[str, Any]] = []
    t = time.monotonic()
    seen: set[str] = set()
    for w in list(agent.workers.values()):
        containers = []
        complete = True
        window = 0.0
        for c in w.cs.values():
            if c.init or not c.cid or c.status is None or c.status.state != "running":
                continue
            try:
                st = agent.runtime.stats(c.cid)
            except TugError:
                complete = False
                continue
            seen.add(c.cid)
            rate = _cpu_rate(c.cid, int(st.get("cpu_usage_ns") or 0), t)
            if rate is None:
                complete = False
                continue
            window = max(window, rate[1])
            containers.append({"name": c.name, "usage": {"cpu": f"{rate[0]}n",
                                                         "memory": f"{_working_set(st) // 1024}Ki"}})
        if not containers or not complete:
            continue
        md = w.pod["metadata"]
        pods.append({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                     "metadata": {"name": md["name"], "namespace": md["namespace"], "labels": md.get("labels") or {}},
                     "timestamp": ts, "window": f"{max(1, round(window))}s", "containers": containers})
    for cid in [k for k in _prev if k not in seen and _prev[k][0] < t - 3600]:
        del _prev[cid]  # containers gone for an hour (several agents may share this process)
    cpu, mem = node_usage()
    node = {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics", "metadata": {"name": agent.name},
            "timestamp": ts, "window": "15s", "usage": {"cpu": f"{cpu}n", "memory": f"{mem // 1024}Ki"}}
    return pods, node
