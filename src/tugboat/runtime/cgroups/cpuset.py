"""cpuset controller: cpus and mems (same file names in v1 and v2)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    cpu = res.get("cpu") or {}
    out: list[tuple[str, str]] = []
    if cpu.get("cpus"):
        out.append(("cpuset.cpus", str(cpu["cpus"])))
    if cpu.get("mems"):
        out.append(("cpuset.mems", str(cpu["mems"])))
    return out


v2 = v1
