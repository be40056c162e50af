"""freezer: freezer.state (v1) and cgroup.freeze (v2)."""

from __future__ import annotations


def v1(frozen: bool) -> tuple[str, str]:
    return ("freezer.state", "FROZEN" if frozen else "THAWED")


def v2(frozen: bool) -> tuple[str, str]:
    return ("cgroup.freeze", "1" if frozen else "0")
