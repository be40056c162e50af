"""Compile an OCI ``linux.seccomp`` object into a classic BPF program (no libseccomp).

Layout of the generated filter (x86_64):
  1. wrong audit arch, or an x32 syscall number -> the default action
  2. for each syscall with rules: ``JEQ nr`` then its body: the argument-filtered rules in
     profile order (all conditions of a rule must hold), then the unconditional rule if any,
     then the default action
  3. the default action
Arguments are compared as 64-bit values (two 32-bit halves), as libseccomp does.
"""

from __future__ import annotations

import os
import struct

from tugboat.errors import InvalidArgument
from tugboat.runtime import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

_LD_W_ABS = 0x20
_JEQ = 0x15
_JGT = 0x25
_JGE = 0x35
_JA = 0x05
_RET = 0x06
_AND = 0x54

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

EPERM = 1

_SYSCALLS: dict[str, int] = {}


def syscall_table() -> dict[str, int]:
    """x86_64 syscall names to numbers (our data file made from the kernel's unistd_64.h)."""
    if not _SYSCALLS:
        with open(os.path.join(os.path.dirname(__file__), "syscalls_x86_64.json"), encoding="utf-8") as f:
            _SYSCALLS.update(json.loads(f.read()))
    return _SYSCALLS


def action_value(action: str, errno_ret: int | None, default_errno: int | None = None) -> int:
    """The SECCOMP_RET_* value of an OCI action name."""
    if action == "SCMP_ACT_ALLOW":
        return RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        err = errno_ret if errno_ret is not None else (default_errno if default_errno is not None else EPERM)
        return RET_ERRNO | (err & 0xFFFF)
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return RET_KILL_THREAD
    if action == "SCMP_ACT_KILL_PROCESS":
        return RET_KILL_PROCESS
    if action == "SCMP_ACT_TRAP":
        return RET_TRAP
    if action == "SCMP_ACT_TRACE":
        return RET_TRACE | ((errno_ret or 0) & 0xFFFF)
    if action == "SCMP_ACT_LOG":
        return RET_LOG
    raise InvalidArgument(f"seccomp: unsupported action {action!r}")


class _Asm:
    """Tiny BPF assembler with forward labels."""

    def __init__(self) -> None:
        self.ins: list[list[Any]] = []  # [code, jt, jf, k]; jt/jf may be label names
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def here(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def emit(self, code: int, jt: int | str = 0, jf: int | str = 0, k: int = 0) -> None:
        self.ins.append([code, jt, jf, k & 0xFFFFFFFF])

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (code, jt, jf, k) in enumerate(self.ins):
            if code == _JA and isinstance(k, int) and isinstance(jt, str):
                k = self.labels[jt] - i - 1
                jt = 0
            vals = []
            for j in (jt, jf):
                if isinstance(j, str):
                    off = self.labels[j] - i - 1
                    if off < 0 or off > 255:
                        raise InvalidArgument("seccomp: filter too large for a BPF jump")
                    vals.append(off)
                else:
                    vals.append(j)
            out += struct.pack("=HBBI", code, vals[0], vals[1], k)
        return bytes(out)


def _arg_offsets(index: int) -> tuple[int, int]:
    base = 16 + 8 * index
    return base, base + 4  # low, high (little endian)


def _emit_condition(asm: _Asm, arg: dict[str, Any], fail: str) -> None:
    """Emit code that falls through when the condition holds, else jumps to ``fail``."""
    index = int(arg["index"])
    if not 0 <= index <= 5:
        raise InvalidArgument(f"seccomp: argument index {index} out of range")
    value = int(arg.get("value", 0)) & 0xFFFFFFFFFFFFFFFF
    value2 = int(arg.get("valueTwo", 0)) & 0xFFFFFFFFFFFFFFFF
    op = arg.get("op", "")
    lo_off, hi_off = _arg_offsets(index)
    hi, lo = value >> 32, value & 0xFFFFFFFF
    ok = asm.label()
    if op == "SCMP_CMP_EQ":
        asm.emit(_LD_W_ABS, k=hi_off)
        asm.emit(_JEQ, 0, fail, hi)
        asm.emit(_LD_W_ABS, k=lo_off)
        asm.emit(_JEQ, ok, fail, lo)
    elif op == "SCMP_CMP_NE":
        asm.emit(_LD_W_ABS, k=hi_off)
        asm.emit(_JEQ, 0, ok, hi)
        asm.emit(_LD_W_ABS, k=lo_off)
        asm.emit(_JEQ, fail, ok, lo)
    elif op == "SCMP_CMP_MASKED_EQ":
        mhi, mlo = value >> 32, value & 0xFFFFFFFF
        asm.emit(_LD_W_ABS, k=hi_off)
        asm.emit(_AND, k=mhi)
        asm.emit(_JEQ, 0, fail, value2 >> 32)
        asm.emit(_LD_W_ABS, k=lo_off)
        asm.emit(_AND, k=mlo)
        asm.emit(_JEQ, ok, fail, value2 & 0xFFFFFFFF)
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_LT", "SCMP_CMP_LE"):
        # GT/GE directly; LT = not GE, LE = not GT
        strict = op in ("SCMP_CMP_GT", "SCMP_CMP_LE")
        invert = op in ("SCMP_CMP_LT", "SCMP_CMP_LE")
        t, f = (fail, ok) if invert else (ok, fail)
        asm.emit(_LD_W_ABS, k=hi_off)
        asm.emit(_JGT, t, 0, hi)
        asm.emit(_JEQ, 0, f, hi)
        asm.emit(_LD_W_ABS, k=lo_off)
        asm.emit(_JGT if strict else _JGE, t, f, lo)
    else:
        raise InvalidArgument(f"seccomp: unsupported argument operator {op!r}")
    asm.here(ok)


def compile_filter(seccomp: dict[str, Any]) -> bytes:
    """The BPF program for an OCI ``linux.seccomp`` object (x86_64)."""
    table = syscall_table()
    default_errno = seccomp.get("defaultErrnoRet")
    default = action_value(seccomp.get("defaultAction", "SCMP_ACT_ALLOW"), default_errno)
    # as with libseccomp, the native architecture is always part of the filter; other listed
    # architectures (x86, x32) are not compiled: their syscalls get the default action

    # per syscall number: list of (args or None, ret value)
    rules: dict[int, list[tuple[list[dict[str, Any]] | None, int]]] = {}
    order: list[int] = []
    for rule in seccomp.get("syscalls") or []:
        ret = action_value(rule.get("action", ""), rule.get("errnoRet"), default_errno)
        args = rule.get("args") or None
        for name in rule.get("names") or []:
            nr = table.get(name)
            if nr is None:
                continue  # a syscall this architecture does not have
            if nr not in rules:
                rules[nr] = []
                order.append(nr)
            rules[nr].append((args, ret))

    asm = _Asm()
    default_label = asm.label()
    asm.emit(_LD_W_ABS, k=4)  # arch
    asm.emit(_JEQ, 1, 0, AUDIT_ARCH_X86_64)
    asm.emit(_RET, k=default)
    asm.emit(_LD_W_ABS, k=0)  # nr
    asm.emit(_JGE, 0, 1, X32_SYSCALL_BIT)
    asm.emit(_RET, k=default)
    for nr in order:
        entries = rules[nr]
        conditional = [(a, r) for a, r in entries if a]
        unconditional = next((r for a, r in entries if not a), None)
        final = unconditional if unconditional is not None else default
        if not conditional and final == default:
            continue
        nxt = asm.label()
        asm.emit(_JEQ, 0, nxt, nr)
        for args, ret in conditional:
            fail = asm.label()
            for arg in args or []:
                _emit_condition(asm, arg, fail)
            asm.emit(_RET, k=ret)
            asm.here(fail)
            asm.emit(_LD_W_ABS, k=0)  # conditions clobbered A; not needed but keeps A = nr
        asm.emit(_RET, k=final)
        asm.here(nxt)
    asm.here(default_label)
    asm.emit(_RET, k=default)
    prog = asm.assemble()
    if len(prog) // 8 > 4096:
        raise InvalidArgument("seccomp: filter longer than 4096 BPF instructions")
    return prog


def filter_cache_key(seccomp: dict[str, Any]) -> str:
    from _sha256 import sha256

    return sha256(json.dumps(seccomp).encode()).hexdigest()


def compile_cached(seccomp: dict[str, Any], cache_dir: str | None) -> bytes:
    """``compile_filter`` with an on-disk cache keyed by the profile's hash (profiles repeat)."""
    if not cache_dir:
        return compile_filter(seccomp)
    path = os.path.join(cache_dir, filter_cache_key(seccomp) + ".bpf")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        pass
    prog = compile_filter(seccomp)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(prog)
        os.rename(tmp, path)
    except OSError:
        pass
    return prog
