"""The seccomp compiler: runc/libseccomp semantics checked on the BPF itself (a small BPF
interpreter here) and on the real kernel (a forked child loads the filter; no root needed)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
from typing import Any

import pytest

from tugboat.errors import InvalidArgument
from tugboat.runtime import kernel as k
from tugboat.runtime import seccomp
from tugboat.runtime.spec import DEFAULT_CAPABILITIES, load_default_seccomp_profile, resolve_seccomp_profile

ARCH = seccomp.AUDIT_ARCH_X86_64
I386 = seccomp.AUDIT_ARCH_I386
NR = seccomp.syscall_table()
NR32 = seccomp.syscall_table("x86")
NAMES: dict[int, dict[int, set[str]]] = {ARCH: {}, I386: {}}
for _arch, _table in ((ARCH, NR), (I386, NR32)):
    for _name, _nr in _table.items():
        NAMES[_arch].setdefault(_nr, set()).add(_name)


def run_bpf(prog: bytes, nr: int, args: tuple[int, ...] = (), arch: int = ARCH, steps: list[int] | None = None) -> int:
    """Interpret a classic BPF seccomp program on one seccomp_data; the SECCOMP_RET_* value
    (``steps`` gets the number of instructions executed)."""
    full = (list(args) + [0] * 6)[:6]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in full])
    ins = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    a, pc, n = 0, 0, 0
    while True:
        code, jt, jf, kk = ins[pc]
        pc += 1
        n += 1
        if code == 0x20:  # ld [k]
            a = struct.unpack_from("=I", data, kk)[0]
        elif code == 0x54:  # and #k
            a &= kk
        elif code == 0x05:  # ja
            pc += kk
        elif code in (0x15, 0x25, 0x35):  # jeq / jgt / jge
            cond = a == kk if code == 0x15 else (a > kk if code == 0x25 else a >= kk)
            pc += jt if cond else jf
        elif code == 0x06:
            if steps is not None:
                steps.append(n)
            return kk
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


def _holds(cond: dict[str, Any], args: tuple[int, ...], mask: int) -> bool:
    v = (list(args) + [0] * 6)[cond["index"]] & mask
    x = cond.get("value", 0) & mask
    op = cond["op"]
    if op == "SCMP_CMP_MASKED_EQ":
        return v & x == cond.get("valueTwo", 0) & mask
    return {"SCMP_CMP_EQ": v == x, "SCMP_CMP_NE": v != x, "SCMP_CMP_LT": v < x, "SCMP_CMP_LE": v <= x,
            "SCMP_CMP_GT": v > x, "SCMP_CMP_GE": v >= x}[op]


def reference(profile: dict[str, Any], nr: int, args: tuple[int, ...] = (), arch: int = ARCH) -> int:
    """The decision the OCI profile asks for, evaluated directly (runc's semantics)."""
    default = seccomp.action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    listed = profile.get("architectures") or []
    if arch == I386 and "SCMP_ARCH_X86" not in listed:
        return default
    table, mask, arch_name = (NR, 2**64 - 1, "SCMP_ARCH_X86_64") if arch == ARCH else (NR32, 2**32 - 1, "SCMP_ARCH_X86")
    names = NAMES[arch].get(nr, set())
    conditional, unconditional = [], None
    for rule in profile.get("syscalls") or []:
        if not names & set(rule.get("names") or []):
            continue
        ret = seccomp.action_value(rule["action"], rule.get("errnoRet"), profile.get("defaultErrnoRet"))
        conds = rule.get("args") or []
        if not conds:
            unconditional = ret if unconditional is None else unconditional
            continue
        indexes = [c["index"] for c in conds]
        if len(set(indexes)) != len(indexes):
            conditional += [([c], ret) for c in conds]  # same index twice: OR-ed
        else:
            conditional.append((conds, ret))
    for conds, ret in conditional:
        if all(_holds(c, args, mask) for c in conds):
            return ret
    if unconditional is not None:
        return unconditional
    known = [table[n] for r in profile.get("syscalls") or [] for n in r.get("names") or [] if n in table]
    if (known and nr > max(known) and arch_name in listed
            and profile["defaultAction"] not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")):
        return seccomp.RET_ERRNO | errno.ENOSYS
    return default


def test_docker_default_profile_decisions_match_the_profile() -> None:
    """Every syscall number (and the argument cases the profile distinguishes) of Docker's
    default profile compiles to the decision the profile states."""
    profile = resolve_seccomp_profile(load_default_seccomp_profile(), DEFAULT_CAPABILITIES, arch="amd64")
    prog = seccomp.compile_filter(profile)
    probes = [(), (0,), (1,), (0x7E020000,), (0x10000000,), (0xFFFFFFFF,), (8,), (0x20008,), (0x0, 0x0, 0x0)]
    for rule in profile["syscalls"]:
        for c in rule.get("args") or []:
            for v in (c["value"], c["value"] + 1, c["value"] - 1, c.get("valueTwo", 0)):
                probes.append(tuple([0] * c["index"] + [v]))
    for arch, table in ((ARCH, NR), (I386, NR32)):
        with_args = {table[n] for r in profile["syscalls"] if r.get("args") for n in r["names"] if n in table}
        for nr in range(0, 700):
            for args in probes if nr in with_args else [(), (1, 2, 3)]:
                assert run_bpf(prog, nr, args, arch) == reference(profile, nr, args, arch), (hex(arch), nr, args)
    # the decisions that matter most, spelled out
    allow, eperm = seccomp.RET_ALLOW, seccomp.RET_ERRNO | errno.EPERM
    assert run_bpf(prog, NR["read"]) == allow and run_bpf(prog, NR["keyctl"]) == eperm
    assert run_bpf(prog, NR["clone"], (0x11,)) == allow  # plain fork
    assert run_bpf(prog, NR["clone"], (0x10000000,)) == eperm  # CLONE_NEWUSER
    assert run_bpf(prog, NR["clone3"]) == seccomp.RET_ERRNO | errno.ENOSYS
    assert run_bpf(prog, 1000) == seccomp.RET_ERRNO | errno.ENOSYS  # beyond every known syscall
    # i386 (listed by Docker's profile): its own numbers, 32-bit arguments
    assert run_bpf(prog, NR32["read"], arch=I386) == allow and run_bpf(prog, NR32["keyctl"], arch=I386) == eperm
    assert run_bpf(prog, NR32["personality"], (0xFFFFFFFF,), I386) == allow
    assert run_bpf(prog, NR32["personality"], (0x1234,), I386) == eperm
    assert run_bpf(prog, 463, arch=I386) == seccomp.RET_ERRNO | errno.ENOSYS
    assert run_bpf(prog, NR["read"], arch=0x40000028) == eperm  # another architecture (arm): default
    assert run_bpf(prog, NR["read"] | seccomp.X32_SYSCALL_BIT) == eperm  # x32 refused
    no_x86 = dict(profile, architectures=["SCMP_ARCH_X86_64"])
    assert run_bpf(seccomp.compile_filter(no_x86), NR32["read"], arch=I386) == eperm


# a profile with runc's argument corner cases (after runc's seccomp_syscall_test1)
OR_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"action": "SCMP_ACT_ALLOW", "names": [
            "read", "write", "exit", "exit_group", "close", "mmap", "munmap", "brk", "rt_sigreturn",
            "rt_sigaction", "rt_sigprocmask", "futex", "getpid", "fstat", "newfstatat", "lseek", "openat"]},
        {"action": "SCMP_ACT_ALLOW", "names": ["dup3"], "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"action": "SCMP_ACT_ALLOW", "names": ["dup3"], "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_GT"}]},
        {"action": "SCMP_ACT_ALLOW", "names": ["kcmp"], "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 1337, "op": "SCMP_CMP_EQ"}]},
        {"action": "SCMP_ACT_ALLOW", "names": ["process_vm_readv"], "args": [
            {"index": 0, "value": 100, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 9001, "op": "SCMP_CMP_EQ"}]},
        {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOANO, "names": ["process_vm_writev"], "args": [
            {"index": 0, "value": 1337, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2020, "op": "SCMP_CMP_EQ"}]},
    ],
}
E = seccomp.RET_ERRNO


def test_syscall_lookup_is_a_binary_search() -> None:
    """Any syscall of Docker's profile is decided in a few dozen BPF instructions (a linear
    chain needed up to ~700): cheaper at every filtered syscall and when the kernel
    precomputes its always-allowed syscalls as the filter is loaded."""
    profile = resolve_seccomp_profile(load_default_seccomp_profile(), DEFAULT_CAPABILITIES, arch="amd64")
    prog = seccomp.compile_filter(profile)
    steps: list[int] = []
    for arch in (ARCH, I386):
        for nr in range(0, 470):
            run_bpf(prog, nr, (), arch, steps)
    assert max(steps) < 60, max(steps)
    assert len(prog) // 8 < 2500


def test_same_index_conditions_are_ored_and_unknown_numbers_get_enosys() -> None:
    prog = seccomp.compile_filter(OR_PROFILE)
    pr, pw = NR["process_vm_readv"], NR["process_vm_writev"]
    assert run_bpf(prog, pr, (100,)) == seccomp.RET_ALLOW
    assert run_bpf(prog, pr, (9001,)) == seccomp.RET_ALLOW
    assert run_bpf(prog, pr, (0,)) == E | errno.EPERM
    assert run_bpf(prog, pw, (1337,)) == E | errno.ENOANO
    assert run_bpf(prog, pw, (2020,)) == E | errno.ENOANO
    assert run_bpf(prog, pw, (0,)) == E | errno.EPERM
    # different indexes stay AND-ed
    assert run_bpf(prog, NR["kcmp"], (0, 1337)) == seccomp.RET_ALLOW
    assert run_bpf(prog, NR["kcmp"], (0, 0)) == E | errno.EPERM
    assert run_bpf(prog, NR["kcmp"], (500, 1337)) == E | errno.EPERM
    # two rules for one syscall
    assert [run_bpf(prog, NR["dup3"], (fd,)) for fd in (0, 1, 2, 3)] == [
        E | errno.EPERM, seccomp.RET_ALLOW, E | errno.EPERM, seccomp.RET_ALLOW]
    # above the largest syscall the profile names: -ENOSYS; below it, unknown ones: the default
    assert run_bpf(prog, 1000) == E | errno.ENOSYS
    assert run_bpf(prog, max(NR[n] for r in OR_PROFILE["syscalls"] for n in r["names"]) + 1) == E | errno.ENOSYS
    assert run_bpf(prog, NR["unshare"]) == E | errno.EPERM
    for nr in range(0, 600):
        for args in [(), (100,), (9001,), (1337,), (2020,), (0, 1337), (3,)]:
            assert run_bpf(prog, nr, args) == reference(OR_PROFILE, nr, args), (nr, args)


def test_no_enosys_stub_when_the_default_allows_or_the_arch_is_not_listed() -> None:
    allow = dict(OR_PROFILE, defaultAction="SCMP_ACT_ALLOW")
    assert run_bpf(seccomp.compile_filter(allow), 1000) == seccomp.RET_ALLOW
    no_arch = dict(OR_PROFILE, architectures=["SCMP_ARCH_X86"])
    assert run_bpf(seccomp.compile_filter(no_arch), 1000) == E | errno.EPERM
    enosys_default = dict(OR_PROFILE, defaultErrnoRet=errno.ENOSYS)
    assert run_bpf(seccomp.compile_filter(enosys_default), NR["unshare"]) == E | errno.ENOSYS


def test_or_semantics_and_enosys_on_the_real_kernel() -> None:
    """The same profile loaded in a forked child: the kernel's answers (EINVAL means the filter
    let process_vm_readv through to the kernel, which rejects the bogus arguments)."""
    prog = seccomp.compile_filter(OR_PROFILE)
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the filter (dlopen needs openat/mmap)
    libc.syscall.restype = ctypes.c_long
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out: list[Any] = []
        try:
            k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
            k.seccomp_set_filter(prog)
            cases = [(NR["process_vm_readv"], 100, 0, 0, 0, 0, -1), (NR["process_vm_readv"], 9001, 0, 0, 0, 0, -1),
                     (NR["process_vm_readv"], 0, 0, 0, 0, 0, -1), (NR["process_vm_writev"], 1337, 0, 0, 0, 0, -1),
                     (NR["process_vm_writev"], 2020, 0, 0, 0, 0, -1), (NR["process_vm_writev"], 0, 0, 0, 0, 0, -1),
                     (NR["kcmp"], 0, 1337, 0, 0, 0), (NR["kcmp"], 500, 1337, 0, 0, 0),
                     (NR["dup3"], 1, -100, 0xFFFF), (NR["dup3"], 2, -100, 0xFFFF),
                     (NR["unshare"], 0), (1000, 0xDEADBEEF, 0xCAFEFEED, 0x1337)]
            for nr, *args in cases:
                res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
                out.append(-ctypes.get_errno() if res < 0 else res)
        except BaseException as e:
            out = [repr(e)]
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    os.waitpid(pid, 0)
    assert json.loads(data) == [-errno.EINVAL, -errno.EINVAL, -errno.EPERM, -errno.ENOANO, -errno.ENOANO,
                                -errno.EPERM, -errno.ESRCH, -errno.EPERM, -errno.EINVAL, -errno.EPERM,
                                -errno.EPERM, -errno.ENOSYS]


I386_PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
/* i386 syscalls from a 64-bit program through int $0x80 (seccomp sees AUDIT_ARCH_I386) */
static long sys32(long nr, long a) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(0), "d"(0) : "memory");
    return ret;
}
int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2)
        printf("%ld\n", sys32(strtol(argv[i], NULL, 0), strtol(argv[i + 1], NULL, 0)));
    return 0;
}
"""


def test_i386_syscalls_on_the_real_kernel(tmp_path: Any) -> None:
    """Docker's profile lists SCMP_ARCH_X86: 32-bit syscalls are filtered by the i386 numbers
    (before, every one of them got the default EPERM)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the i386 probe")
    (tmp_path / "probe.c").write_text(I386_PROBE)
    exe = str(tmp_path / "probe")
    subprocess.run([gcc, "-O2", "-static", "-o", exe, str(tmp_path / "probe.c")], check=True)
    profile = resolve_seccomp_profile(load_default_seccomp_profile(), DEFAULT_CAPABILITIES, arch="amd64")
    prog = seccomp.compile_filter(profile)
    calls = [NR32["getpid"], 0, NR32["keyctl"], 0, NR32["personality"], 0xFFFFFFFF,
             NR32["personality"], 0x1234, 463, 0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
            k.seccomp_set_filter(prog)
            os.execv(exe, [exe, *[str(c) for c in calls]])
        finally:
            os._exit(127)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    got = [int(x) for x in out.split()]
    assert got[0] == pid  # getpid allowed
    assert got[1:] == [-errno.EPERM, 0, -errno.EPERM, -errno.ENOSYS], got


def test_notify_rules() -> None:
    base = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    assert seccomp.uses_notify(base) and not seccomp.uses_notify({"defaultAction": "SCMP_ACT_ALLOW"})
    prog = seccomp.compile_filter(base)
    assert run_bpf(prog, NR["mkdir"]) == seccomp.RET_USER_NOTIF
    assert run_bpf(prog, NR["rmdir"]) == seccomp.RET_ALLOW
    with pytest.raises(InvalidArgument, match="SCMP_ACT_NOTIFY cannot be used for the write syscall"):
        seccomp.compile_filter(dict(base, syscalls=[{"names": ["write", "mkdir"], "action": "SCMP_ACT_NOTIFY"}]))
    with pytest.raises(InvalidArgument, match="cannot be used as default action"):
        seccomp.compile_filter(dict(base, defaultAction="SCMP_ACT_NOTIFY"))
    with pytest.raises(InvalidArgument, match="listenerPath"):
        seccomp.compile_filter(dict(base, listenerPath=""))
    # a listener path without notify rules is fine (runc ignores it)
    assert seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"})


def test_cache_key_changes_with_the_compiler_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = seccomp.filter_cache_key(OR_PROFILE)
    monkeypatch.setattr(seccomp, "COMPILER_VERSION", seccomp.COMPILER_VERSION + 1)
    assert seccomp.filter_cache_key(OR_PROFILE) != key
