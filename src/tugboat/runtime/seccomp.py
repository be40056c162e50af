"""Compile an OCI ``linux.seccomp`` object into a classic BPF program (no libseccomp).

Layout of the generated filter (x86_64 host):
  1. the audit arch: x86_64 -> its section; i386 (``int 0x80``, 32-bit programs) -> its own
     section when ``SCMP_ARCH_X86`` is listed; anything else -> the default action
  2. x86_64 section: an x32 syscall number -> the default action (x32 is not compiled)
  3. runc's -ENOSYS stub: a syscall numbered above every syscall the profile names (in that
     architecture's table) gets ``ERRNO(ENOSYS)`` (so that new syscalls look absent, and libcs
     fall back), unless the default action allows (ALLOW/LOG/TRACE) or the architecture is not
     listed
  4. a binary search on the syscall number down to groups of a few syscalls, each ``JEQ nr``
     then its body: the argument-filtered rules in profile order (all conditions of a rule must
     hold), then the unconditional rule if any, then the default action; a syscall without
     rules of its own falls out of its group to the default action
Arguments are compared as 64-bit values (two 32-bit halves) on x86_64 and as 32-bit values on
i386, as libseccomp does. A rule with several conditions on the same argument index is split
into one rule per condition (they are OR-ed), as runc does.
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
AUDIT_ARCH_I386 = 0x40000003
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
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000

EPERM = 1
ENOSYS = 38
_ALLOWING = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

_SYSCALLS: dict[str, dict[str, int]] = {}


def syscall_table(arch: str = "x86_64") -> dict[str, int]:
    """Syscall names to numbers: ``x86_64`` (our data file made from the kernel's unistd_64.h)
    or ``x86`` (i386: from unistd_32.h, plus the numbers >= 424 every architecture shares)."""
    table = _SYSCALLS.get(arch)
    if table is None:
        with open(os.path.join(os.path.dirname(__file__), f"syscalls_{arch}.json"), encoding="utf-8") as f:
            table = _SYSCALLS[arch] = json.loads(f.read())
    return table


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
    if action == "SCMP_ACT_NOTIFY":
        return RET_USER_NOTIF
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


def _emit_condition(asm: _Asm, arg: dict[str, Any], fail: str, wide: bool = True) -> None:
    """Emit code that falls through when the condition holds, else jumps to ``fail``
    (``wide``: 64-bit arguments; else only their low 32 bits count, as on i386)."""
    index = int(arg["index"])
    if not 0 <= index <= 5:
        raise InvalidArgument(f"seccomp: argument index {index} out of range")
    value = int(arg.get("value", 0)) & 0xFFFFFFFFFFFFFFFF
    value2 = int(arg.get("valueTwo", 0)) & 0xFFFFFFFFFFFFFFFF
    op = arg.get("op", "")
    lo_off, hi_off = _arg_offsets(index)
    hi, lo = value >> 32, value & 0xFFFFFFFF
    ok = asm.label()
    if not wide:
        _emit_condition32(asm, op, lo_off, lo, value2 & 0xFFFFFFFF, ok, fail)
    elif op == "SCMP_CMP_EQ":
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


def _emit_condition32(asm: _Asm, op: str, off: int, value: int, value2: int, ok: str, fail: str) -> None:
    asm.emit(_LD_W_ABS, k=off)
    if op == "SCMP_CMP_EQ":
        asm.emit(_JEQ, ok, fail, value)
    elif op == "SCMP_CMP_NE":
        asm.emit(_JEQ, fail, ok, value)
    elif op == "SCMP_CMP_MASKED_EQ":
        asm.emit(_AND, k=value)
        asm.emit(_JEQ, ok, fail, value2)
    elif op == "SCMP_CMP_GT":
        asm.emit(_JGT, ok, fail, value)
    elif op == "SCMP_CMP_GE":
        asm.emit(_JGE, ok, fail, value)
    elif op == "SCMP_CMP_LT":
        asm.emit(_JGE, fail, ok, value)
    elif op == "SCMP_CMP_LE":
        asm.emit(_JGT, fail, ok, value)
    else:
        raise InvalidArgument(f"seccomp: unsupported argument operator {op!r}")


def uses_notify(seccomp: dict[str, Any] | None) -> bool:
    """Whether a profile has ``SCMP_ACT_NOTIFY`` rules (the filter then needs a listener fd)."""
    if not seccomp:
        return False
    return any(r.get("action") == "SCMP_ACT_NOTIFY" for r in seccomp.get("syscalls") or [])


def validate_notify(seccomp: dict[str, Any]) -> None:
    """runc's checks for ``SCMP_ACT_NOTIFY`` (its messages, word for word)."""
    if seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY":
        raise InvalidArgument("SCMP_ACT_NOTIFY cannot be used as default action")
    if not uses_notify(seccomp):
        return
    for rule in seccomp.get("syscalls") or []:
        if rule.get("action") == "SCMP_ACT_NOTIFY" and "write" in (rule.get("names") or []):
            raise InvalidArgument("SCMP_ACT_NOTIFY cannot be used for the write syscall")
    if not seccomp.get("listenerPath"):
        raise InvalidArgument("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath (the seccomp agent)")


def _split_conditions(args: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """runc: conditions of one rule are AND-ed, unless two name the same argument index;
    then every condition becomes a rule of its own (OR-ed)."""
    indexes = [int(a.get("index", 0)) for a in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [[a] for a in args]


def compile_filter(seccomp: dict[str, Any]) -> bytes:
    """The BPF program for an OCI ``linux.seccomp`` object (x86_64 host)."""
    default_errno = seccomp.get("defaultErrnoRet")
    default_action = seccomp.get("defaultAction", "SCMP_ACT_ALLOW")
    default = action_value(default_action, default_errno)
    validate_notify(seccomp)
    archs = ["SCMP_ARCH_X86_64" if a == "SCMP_ARCH_NATIVE" else a for a in seccomp.get("architectures") or []]
    # runc's -ENOSYS stub: not when the default allows, nor when the default already is ENOSYS
    stub = default_action not in _ALLOWING and default != RET_ERRNO | ENOSYS
    asm = _Asm()
    # as with libseccomp, the native architecture is always part of the filter; i386 when listed;
    # x32 is not compiled (its syscalls get the default action)
    other = asm.label()
    asm.emit(_LD_W_ABS, k=4)  # arch
    asm.emit(_JEQ, 1, 0, AUDIT_ARCH_X86_64)
    asm.emit(_JA, other)
    asm.emit(_LD_W_ABS, k=0)  # nr
    asm.emit(_JGE, 0, 1, X32_SYSCALL_BIT)
    asm.emit(_RET, k=default)
    _emit_section(asm, seccomp, syscall_table("x86_64"), default, stub and "SCMP_ARCH_X86_64" in archs, True)
    asm.here(other)
    if "SCMP_ARCH_X86" in archs:
        asm.emit(_JEQ, 1, 0, AUDIT_ARCH_I386)
        asm.emit(_RET, k=default)
        asm.emit(_LD_W_ABS, k=0)  # nr
        _emit_section(asm, seccomp, syscall_table("x86"), default, stub, False)
    else:
        asm.emit(_RET, k=default)
    prog = asm.assemble()
    if len(prog) // 8 > 4096:
        raise InvalidArgument("seccomp: filter longer than 4096 BPF instructions")
    return prog


def _emit_section(
    asm: _Asm, seccomp: dict[str, Any], table: dict[str, int], default: int, enosys_stub: bool, wide: bool
) -> None:
    """One architecture's rules (A holds the syscall number); ends with the default action."""
    default_errno = seccomp.get("defaultErrnoRet")
    # per syscall number: list of (args or None, ret value)
    rules: dict[int, list[tuple[list[dict[str, Any]] | None, int]]] = {}
    order: list[int] = []
    last_nr = 0
    for rule in seccomp.get("syscalls") or []:
        ret = action_value(rule.get("action", ""), rule.get("errnoRet"), default_errno)
        args = rule.get("args") or None
        for name in rule.get("names") or []:
            nr = table.get(name)
            if nr is None:
                continue  # a syscall this architecture does not have
            last_nr = max(last_nr, nr)
            if nr not in rules:
                rules[nr] = []
                order.append(nr)
            for cond in _split_conditions(args) if args else [None]:
                rules[nr].append((cond, ret))
    if enosys_stub and last_nr:
        asm.emit(_JGT, 0, 1, last_nr)
        asm.emit(_RET, k=RET_ERRNO | ENOSYS)
    bodies: list[tuple[int, list[tuple[list[dict[str, Any]], int]], int]] = []
    for nr in sorted(order):
        entries = rules[nr]
        conditional = [(a, r) for a, r in entries if a]
        unconditional = next((r for a, r in entries if not a), None)
        final = unconditional if unconditional is not None else default
        if conditional or final != default:
            bodies.append((nr, conditional, final))  # type: ignore[arg-type]
    _emit_tree(asm, bodies, default, wide)


_LEAF = 8


def _emit_tree(
    asm: _Asm, bodies: list[tuple[int, list[tuple[list[dict[str, Any]], int]], int]], default: int, wide: bool
) -> None:
    """A binary search on the syscall number (``JGE``), then a short ``JEQ`` chain: a syscall
    costs ~log2(n) comparisons instead of up to n, at run time and when the kernel precomputes
    its always-allowed syscalls at load time. Conditional jumps stay 0/1 (``JA`` goes far)."""
    if len(bodies) > _LEAF:
        mid = len(bodies) // 2
        right = asm.label()
        asm.emit(_JGE, 0, 1, bodies[mid][0])
        asm.emit(_JA, right)
        _emit_tree(asm, bodies[:mid], default, wide)
        asm.here(right)
        _emit_tree(asm, bodies[mid:], default, wide)
        return
    for nr, conditional, final in bodies:
        nxt = asm.label()
        asm.emit(_JEQ, 0, nxt, nr)
        for args, ret in conditional:
            fail = asm.label()
            for arg in args:
                _emit_condition(asm, arg, fail, wide)
            asm.emit(_RET, k=ret)
            asm.here(fail)
            asm.emit(_LD_W_ABS, k=0)  # the conditions loaded arguments into A: back to the nr
        asm.emit(_RET, k=final)
        asm.here(nxt)
    asm.emit(_RET, k=default)


# part of the cache key: bump it whenever the compiler's output for a profile changes
COMPILER_VERSION = 4


def filter_cache_key(seccomp: dict[str, Any]) -> str:
    from _sha256 import sha256

    return sha256(f"v{COMPILER_VERSION}:{json.dumps(seccomp)}".encode()).hexdigest()


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
