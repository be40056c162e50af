"""hugetlb: ``linux.resources.hugepageLimits`` (pageSize like "2MB" or "1GB")."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"hugetlb.{h['pageSize']}.limit_in_bytes", str(int(h["limit"]))) for h in res.get("hugepageLimits") or []]


def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"hugetlb.{h['pageSize']}.max", str(int(h["limit"]))) for h in res.get("hugepageLimits") or []]
