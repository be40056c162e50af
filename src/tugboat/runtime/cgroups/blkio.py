"""blkio (v1) / io (v2): weights and throttles from OCI ``linux.resources.blockIO``.

Weights go to ``blkio.weight``/``blkio.weight_device`` (CFQ) when the kernel has them, else to
the BFQ files ``blkio.bfq.weight``/``blkio.bfq.weight_device`` (the manager picks; see
``V1Manager``), as runc does. A ``weightDevice`` entry only sets the device's weight.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_THROTTLES = (
    ("throttleReadBpsDevice", "read_bps_device", "rbps"),
    ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
    ("throttleReadIOPSDevice", "read_iops_device", "riops"),
    ("throttleWriteIOPSDevice", "write_iops_device", "wiops"),
)


def _dev(d: dict[str, Any]) -> str:
    return f"{int(d['major'])}:{int(d['minor'])}"


def v1(res: dict[str, Any]) -> list[tuple[str, str]]:
    bio = res.get("blockIO") or {}
    out: list[tuple[str, str]] = []
    if bio.get("weight"):
        out.append(("blkio.weight", str(int(bio["weight"]))))
    if bio.get("leafWeight"):
        out.append(("blkio.leaf_weight", str(int(bio["leafWeight"]))))
    for d in bio.get("weightDevice") or []:
        if d.get("weight"):
            out.append(("blkio.weight_device", f"{_dev(d)} {int(d['weight'])}"))
        if d.get("leafWeight"):
            out.append(("blkio.leaf_weight_device", f"{_dev(d)} {int(d['leafWeight'])}"))
    for key, name, _ in _THROTTLES:
        for d in bio.get(key) or []:
            out.append((f"blkio.throttle.{name}", f"{_dev(d)} {int(d['rate'])}"))
    return out


def v2(res: dict[str, Any]) -> list[tuple[str, str]]:
    bio = res.get("blockIO") or {}
    out: list[tuple[str, str]] = []
    if bio.get("weight"):
        # v1 weight 10..1000 onto io.weight 1..10000 (runc's conversion)
        w = int(bio["weight"])
        out.append(("io.weight", str(1 + (w - 10) * 9999 // 990)))
        out.append(("io.bfq.weight", str(w)))
    for d in bio.get("weightDevice") or []:
        if d.get("weight"):
            out.append(("io.bfq.weight", f"{_dev(d)} {int(d['weight'])}"))
    for key, _, v2key in _THROTTLES:
        for d in bio.get(key) or []:
            out.append(("io.max", f"{_dev(d)} {v2key}={int(d['rate'])}"))
    return out
