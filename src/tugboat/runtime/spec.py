"""Default OCI runtime configs (``config.json``) with Docker's secure defaults.

``default_spec`` is what ``tug-runtime spec`` writes and what the engine starts from: Docker's
default capability set, its default seccomp profile (our own data file, ``seccomp_default.json``,
in Docker's profile format and resolved here for the capabilities a container gets), Docker's
masked and read-only paths and its /dev, /proc, /sys mounts.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

OCI_VERSION = "1.0.2"

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

DEFAULT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
]


def default_mounts() -> list[dict[str, Any]]:
    """Docker's mounts: /proc, a tmpfs /dev with devpts, shm and mqueue, a read-only /sys and cgroup."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


_PROFILE_CACHE: dict[str, Any] = {}


def load_default_seccomp_profile() -> dict[str, Any]:
    """Docker-format default profile (with caps/arches/minKernel conditions), from our data file."""
    if "p" not in _PROFILE_CACHE:
        path = os.path.join(os.path.dirname(__file__), "seccomp_default.json")
        with open(path, encoding="utf-8") as f:
            _PROFILE_CACHE["p"] = json.load(f)
    return json.loads(json.dumps(_PROFILE_CACHE["p"]))


_ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "armv7l": "arm"}


def _kernel_at_least(version: str, running: str | None = None) -> bool:
    def parse(v: str) -> tuple[int, ...]:
        out = []
        for part in v.split("-")[0].split(".")[:3]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return parse(running or platform.release()) >= parse(version)


def resolve_seccomp_profile(
    profile: dict[str, Any], capabilities: list[str], *, arch: str | None = None, kernel: str | None = None
) -> dict[str, Any]:
    """Turn a Docker-format profile into an OCI ``linux.seccomp`` object for these capabilities."""
    arch = arch or _ARCH_NAMES.get(platform.machine(), platform.machine())
    caps = set(capabilities)
    architectures: list[str] = []
    for entry in profile.get("archMap") or []:
        architectures.append(entry["architecture"])
        architectures.extend(entry.get("subArchitectures") or [])
    syscalls: list[dict[str, Any]] = []
    for rule in profile.get("syscalls", []):
        inc = rule.get("includes") or {}
        exc = rule.get("excludes") or {}
        if inc.get("caps") and not set(inc["caps"]) <= caps:
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], kernel):
            continue
        if exc.get("caps") and set(exc["caps"]) & caps:
            continue
        if exc.get("arches") and arch in exc["arches"]:
            continue
        out: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
        if rule.get("args"):
            out["args"] = [dict(a) for a in rule["args"]]
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    result: dict[str, Any] = {
        "defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO"),
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if "defaultErrnoRet" in profile:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result


def default_seccomp(capabilities: list[str] | None = None) -> dict[str, Any]:
    """Docker's default seccomp policy as an OCI ``linux.seccomp`` for the given capabilities."""
    return resolve_seccomp_profile(load_default_seccomp_profile(), capabilities or DEFAULT_CAPABILITIES)


def default_spec(
    args: list[str] | None = None, *, terminal: bool = False, rootless: bool = False
) -> dict[str, Any]:
    """A complete OCI config.json (as a dict) with Docker's defaults; rootfs is ``rootfs``."""
    caps = list(DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    mounts = default_mounts()
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args else ["sh"],
            "env": [*DEFAULT_ENV, "TERM=xterm"] if terminal else list(DEFAULT_ENV),
            "cwd": "/",
            "capabilities": {
                "bounding": list(caps),
                "effective": list(caps),
                "permitted": list(caps),
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "tugboat",
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": default_seccomp(caps),
        },
    }
    if rootless:
        namespaces.append({"type": "user"})
        namespaces[:] = [n for n in namespaces if n["type"] != "network"]
        uid, gid = os.getuid(), os.getgid()
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        spec["linux"].pop("resources", None)
        spec["mounts"] = [m for m in mounts if m["type"] not in ("sysfs", "cgroup")]
        spec["mounts"].append(
            {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        )
        for m in spec["mounts"]:
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if not o.startswith("gid=")]
    return spec
