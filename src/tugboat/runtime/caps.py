"""Capability names and sets: OCI names to bits, intersected with the bounding set."""

from __future__ import annotations

CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
CAP_NUMBERS = {name: i for i, name in enumerate(CAPABILITIES)}
CAP_SETPCAP = CAP_NUMBERS["CAP_SETPCAP"]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def to_mask(names: list[str] | None, *, unknown: list[str] | None = None) -> int:
    """Bit mask of OCI capability names; unknown names are collected in ``unknown`` (runc warns)."""
    mask = 0
    for name in names or []:
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        n = CAP_NUMBERS.get(key)
        if n is None:
            if unknown is not None:
                unknown.append(name)
            continue
        mask |= 1 << n
    return mask


def to_names(mask: int) -> list[str]:
    return [name for i, name in enumerate(CAPABILITIES) if mask & (1 << i)]


def read_bounding_mask(pid: str = "self") -> int:
    """CapBnd of a process from /proc (no syscalls)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def plan(capabilities: dict[str, list[str]] | None, bounding_now: int) -> tuple[dict[str, int], list[str]]:
    """The five sets as masks, each intersected with the current bounding set, plus warnings."""
    caps = capabilities or {}
    warnings: list[str] = []
    out: dict[str, int] = {}
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        unknown: list[str] = []
        mask = to_mask(caps.get(kind), unknown=unknown)
        if unknown:
            # the spec: a value that cannot be mapped to a kernel interface must be an error
            raise ValueError(f"unknown {kind} capabilities: {', '.join(unknown)}")
        dropped = mask & ~bounding_now
        if dropped:
            warnings.append(
                f"{kind} capabilities not in the bounding set, ignored: {', '.join(to_names(dropped))}"
            )
        out[kind] = mask & bounding_now
    # ambient needs permitted and inheritable
    out["ambient"] &= out["permitted"] & out["inheritable"]
    return out, warnings
