"""memory controller: OCI ``linux.resources.memory`` to v1 and v2 files."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _limit(v: int | None) -> str | None:
    if v is None:
        return None
    return "-1" if v < 0 else str(v)


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    mem = res.get("memory") or {}
    out: list[tuple[str, str]] = []
    if mem.get("limit") is not None:
        out.append(("memory.limit_in_bytes", _limit(mem["limit"]) or "-1"))
    if mem.get("swap") is not None:
        out.append(("memory.memsw.limit_in_bytes", _limit(mem["swap"]) or "-1"))
    if mem.get("reservation") is not None:
        out.append(("memory.soft_limit_in_bytes", _limit(mem["reservation"]) or "-1"))
    if mem.get("swappiness") is not None and 0 <= int(mem["swappiness"]) <= 100:
        out.append(("memory.swappiness", str(int(mem["swappiness"]))))
    if mem.get("disableOOMKiller"):
        out.append(("memory.oom_control", "1"))
    return out


def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
    mem = res.get("memory") or {}
    out: list[tuple[str, str]] = []
    limit = mem.get("limit")
    if limit is not None:
        out.append(("memory.max", "max" if limit < 0 else str(limit)))
    swap = mem.get("swap")
    if swap is not None:
        if swap < 0:
            out.append(("memory.swap.max", "max"))
        elif limit is not None and limit >= 0:
            # OCI swap is memory+swap; v2 counts swap alone
            out.append(("memory.swap.max", str(max(swap - limit, 0))))
    if mem.get("reservation") is not None:
        r = mem["reservation"]
        out.append(("memory.low", "max" if r < 0 else str(r)))
    return out
