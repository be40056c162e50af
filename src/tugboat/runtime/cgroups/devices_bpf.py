"""Device rules on cgroup v2: an eBPF ``BPF_PROG_TYPE_CGROUP_DEVICE`` program per container.

cgroup v2 has no ``devices.allow``/``devices.deny``; the kernel asks a BPF program attached to
the cgroup instead (``ctx``: ``access_type`` = access << 16 | type, ``major``, ``minor``; return 1
to allow). The program checks the rules from the last to the first; the first that matches
decides (runc's device filter works the same way). A rule matches when its type is ``a`` or the
device's type, its major/minor are wildcards or equal, and the requested access is a subset of
the rule's. When no rule matches, access is allowed (as with an untouched v1 devices cgroup);
OCI configs start with a deny-all rule, so in practice nothing falls through.
"""

from __future__ import annotations

import os
import struct

from tugboat.runtime.cgroups.devices import DEFAULT_ALLOWED, clean_access

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_TYPES = {"b": 1, "c": 2, "u": 2}  # BPF_DEVCG_DEV_BLOCK / _CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _ldx_w(dst: int, src: int, off: int) -> bytes:
    return _insn(0x61, dst, src, off)  # BPF_LDX | BPF_MEM | BPF_W


def _jne_imm(dst: int, imm: int, off: int) -> bytes:
    return _insn(0x55, dst, 0, off, imm)  # BPF_JMP | BPF_JNE | BPF_K


def _ret(value: int) -> bytes:
    return _insn(0xB7, 0, 0, 0, value) + _insn(0x95)  # r0 = value; exit


def rules_with_defaults(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The config's rules, then the devices every container may use (as on v1)."""
    extra = [{"allow": True, "type": t, "major": ma, "minor": mi, "access": "rwm"} for t, ma, mi in DEFAULT_ALLOWED]
    return [*rules, *extra]


def compile_rules(rules: list[dict[str, Any]]) -> bytes:
    """eBPF instructions (8 bytes each) deciding device access by ``rules``."""
    prog = [
        _ldx_w(2, 1, 0), _insn(0x54, 2, 0, 0, 0xFFFF),  # r2 = type   (w2 &= 0xffff)
        _ldx_w(3, 1, 0), _insn(0x74, 3, 0, 0, 16),      # r3 = access (w3 >>= 16)
        _ldx_w(4, 1, 4),                                # r4 = major
        _ldx_w(5, 1, 8),                                # r5 = minor
    ]
    for rule in reversed(rules):
        access = clean_access(rule.get("access"))
        if not access:
            continue
        kind = rule.get("type") or "a"
        checks: list[tuple[str, int]] = []
        if kind != "a":
            if kind not in _TYPES:
                continue  # e.g. "p" (fifo): not a device the cgroup sees
            checks.append(("type", _TYPES[kind]))
        bits = sum(_ACCESS[c] for c in access)
        if bits != 7:
            checks.append(("access", bits))
        major, minor = rule.get("major"), rule.get("minor")
        if kind != "a" and major is not None and major >= 0:
            checks.append(("major", int(major)))
        if kind != "a" and minor is not None and minor >= 0:
            checks.append(("minor", int(minor)))
        # each check jumps over the rest of the block (checks after it, and the 2-insn return)
        block: list[bytes] = []
        for i, (what, value) in enumerate(checks):
            rest = sum(3 if w == "access" else 1 for w, _ in checks[i + 1:]) + 2
            if what == "type":
                block.append(_jne_imm(2, value, rest))
            elif what == "access":
                block += [_insn(0xBC, 1, 3),                 # w1 = w3
                          _insn(0x54, 1, 0, 0, value),       # w1 &= rule access
                          _insn(0x5D, 1, 3, rest)]           # if r1 != r3: next rule
            elif what == "major":
                block.append(_jne_imm(4, value, rest))
            else:
                block.append(_jne_imm(5, value, rest))
        block.append(_ret(1 if rule.get("allow") else 0))
        prog += block
        if not checks:
            return b"".join(prog)  # matches everything: the rules before it (and the default) never run
    prog.append(_ret(1))
    return b"".join(prog)


def load_and_attach(cgroup_dir: str, program: bytes) -> None:
    """Load ``program`` and attach it to the cgroup v2 directory (it stays with the cgroup)."""
    import _ctypes

    from tugboat.runtime import kernel as k

    insns = k._buffer(program)
    license_buf = k._buffer(b"GPL\0")

    def load(log_size: int) -> tuple[int, bytes]:
        log = k._buffer(b"\0" * max(log_size, 1))
        attr = struct.pack("=IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                           _ctypes.addressof(insns), _ctypes.addressof(license_buf), 1 if log_size else 0,
                           log_size, _ctypes.addressof(log) if log_size else 0, 0, 0, b"tug_devices", 0,
                           BPF_CGROUP_DEVICE).ljust(128, b"\0")
        res = k._syscall(SYS_BPF, BPF_PROG_LOAD, k._buffer(attr), 128)
        return res, bytes(log)

    res, _ = load(0)
    if res < 0:
        err = _ctypes.get_errno()
        _, log = load(1 << 16)  # again, for the verifier's reason
        lines = log.split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()
        raise OSError(err, f"cgroup v2 device rules: load BPF program: {os.strerror(err).lower()}"
                      + (f" ({'; '.join(lines[-3:])})" if lines else ""))
    prog_fd = res
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            a = k._buffer(struct.pack("=IIIII", cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0).ljust(32, b"\0"))
            k._check(k._syscall(SYS_BPF, BPF_PROG_ATTACH, a, 32), f"cgroup v2 device rules: attach to {cgroup_dir}")
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
