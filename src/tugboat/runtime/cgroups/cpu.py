"""cpu controller: shares, CFS quota/period, realtime (v1); weight and cpu.max (v2)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def shares_to_weight(shares: int) -> int:
    """The conversion runc and crun use: shares 2..262144 onto weight 1..10000."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    cpu = res.get("cpu") or {}
    out: list[tuple[str, str]] = []
    if cpu.get("shares"):
        out.append(("cpu.shares", str(cpu["shares"])))
    if cpu.get("period"):
        out.append(("cpu.cfs_period_us", str(cpu["period"])))
    if cpu.get("quota") is not None and cpu.get("quota") != 0:
        out.append(("cpu.cfs_quota_us", str(cpu["quota"])))
    if cpu.get("realtimePeriod"):
        out.append(("cpu.rt_period_us", str(cpu["realtimePeriod"])))
    if cpu.get("realtimeRuntime"):
        out.append(("cpu.rt_runtime_us", str(cpu["realtimeRuntime"])))
    return out


def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
    cpu = res.get("cpu") or {}
    out: list[tuple[str, str]] = []
    if cpu.get("shares"):
        out.append(("cpu.weight", str(shares_to_weight(int(cpu["shares"])))))
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota or period:
        q = "max" if not quota or quota < 0 else str(quota)
        out.append(("cpu.max", f"{q} {period or 100000}"))
    return out
