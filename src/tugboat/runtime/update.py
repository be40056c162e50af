"""``update``: change a live container's cgroup limits (runc's ``update`` command and flags).

The new values come from flags or from a JSON ``LinuxResources`` object (``-r FILE`` or ``-r -``
for stdin). As in runc, a zero (or empty) number means "leave as it is", ``-1`` means
unlimited, and only the fields given are written to the cgroup; the container's recorded
config is updated to match. Device rules are not touched (runc's ``update`` cannot change them
either), so an update never opens a window where a device is denied.
"""

from __future__ import annotations

from tugboat.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# flag -> (section, field, kind); kind: "size" (units allowed), "int", "str"
FLAGS: dict[str, tuple[str, str, str]] = {
    "memory": ("memory", "limit", "size"),
    "memory-reservation": ("memory", "reservation", "size"),
    "memory-swap": ("memory", "swap", "size"),
    "kernel-memory": ("memory", "kernel", "size"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "size"),
    "cpu-shares": ("cpu", "shares", "int"),
    "cpu-share": ("cpu", "shares", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "pids-limit": ("pids", "limit", "int"),
    "blkio-weight": ("blockIO", "weight", "int"),
}
# runc's Intel RDT flags: accepted by the parser, refused (no RDT support here)
RDT_FLAGS = ("l3-cache-schema", "mem-bw-schema")


def parse_size(text: str) -> int:
    """Bytes from "1048576", "50M", "1.5g", "512KiB" (binary units, as docker's RAMInBytes); -1 stays -1."""
    s = text.strip()
    if s == "-1":
        return -1
    low = s.lower()
    for suffix in ("ib", "b"):
        if low.endswith(suffix) and len(low) > len(suffix):
            low = low[: -len(suffix)]
            break
    unit = low[-1:] if low[-1:] in _UNITS and low[-1:] else ""
    num = low[: len(low) - len(unit)].strip()
    try:
        value = float(num)
    except ValueError:
        raise InvalidArgument(f"invalid size: {text!r}") from None
    if value < 0:
        raise InvalidArgument(f"invalid size: {text!r}")
    return int(value * _UNITS[unit])


def resources_from_flags(values: dict[str, str]) -> dict[str, Any]:
    """``{"memory": "50M", "cpu-quota": "-1", ...}`` (flag name without dashes -> value) to a
    resources delta."""
    for name in RDT_FLAGS:
        if values.get(name):
            raise InvalidArgument(f"--{name}: Intel RDT is not supported by tug-runtime")
    out: dict[str, Any] = {}
    for flag, raw in values.items():
        if flag not in FLAGS or raw is None or raw == "":
            continue
        section, field, kind = FLAGS[flag]
        if kind == "size":
            value: Any = parse_size(raw)
        elif kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise InvalidArgument(f"invalid value for --{flag}: {raw!r}") from None
        else:
            value = raw
        out.setdefault(section, {})[field] = value
    return _drop_unset(out)


def _drop_unset(res: dict[str, Any]) -> dict[str, Any]:
    """Remove the fields runc treats as "unchanged": zero numbers, empty strings, empty sections."""
    out: dict[str, Any] = {}
    for section, body in res.items():
        if section in ("memory", "cpu", "pids", "blockIO") and isinstance(body, dict):
            kept = {k: v for k, v in body.items()
                    if v is not None and v != "" and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and v == 0)}
            if kept:
                out[section] = kept
        elif body not in (None, {}, []):
            out[section] = body
    return out


def resources_from_json(obj: Any) -> dict[str, Any]:
    """A ``LinuxResources`` JSON object (any key case) to a resources delta."""
    from tugboat.runtime.cgroups import normalize_resources

    if not isinstance(obj, dict):
        raise InvalidArgument("update -r: the resources must be a JSON object")
    res = normalize_resources(obj)
    res.pop("devices", None)  # as runc's update: device rules are not changed by an update
    return _drop_unset(res)


def merge(old: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The recorded resources after an update: sections merged field by field."""
    out = dict(old)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def complete_for_v2(old: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """cgroup v2 writes pairs in one file (``cpu.max`` = quota and period) or derives one value
    from two (``memory.swap.max`` = swap - limit): fill the half the delta lacks from the
    recorded resources, so updating one half keeps the other (runc does the same)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in delta.items()}
    cpu, old_cpu = out.get("cpu"), old.get("cpu") or {}
    if isinstance(cpu, dict) and ("quota" in cpu) != ("period" in cpu):
        for key in ("quota", "period"):
            if key not in cpu and old_cpu.get(key):
                cpu[key] = old_cpu[key]
    mem, old_mem = out.get("memory"), old.get("memory") or {}
    if isinstance(mem, dict) and "swap" in mem and "limit" not in mem and old_mem.get("limit"):
        mem["limit"] = old_mem["limit"]
    return out
