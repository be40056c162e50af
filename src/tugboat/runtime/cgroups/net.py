"""net_cls and net_prio (v1 only): ``linux.resources.network`` classID and per-interface priorities."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def net_cls_v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    net = res.get("network") or {}
    if net.get("classID") is None:
        return []
    return [("net_cls.classid", str(int(net["classID"])))]


def net_prio_v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    net = res.get("network") or {}
    return [("net_prio.ifpriomap", f"{p['name']} {int(p['priority'])}") for p in net.get("priorities") or []]


class _Module:
    def __init__(self, v1: Any) -> None:
        self.v1 = v1

    @staticmethod
    def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
        return []  # no such controllers on cgroup v2 (the eBPF equivalents are not implemented)


net_cls = _Module(net_cls_v1)
net_prio = _Module(net_prio_v1)
