"""pids controller: pids.max (v1 and v2)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    pids = res.get("pids") or {}
    if pids.get("limit") is None:
        return []
    limit = int(pids["limit"])
    return [("pids.max", "max" if limit <= 0 else str(limit))]


v2 = v1
