"""The kernel edge of the runtime: every raw syscall the runtime makes, through ctypes.

Everything else in ``tugboat.runtime`` is plain logic over these functions. Failures raise
``OSError`` with errno set and the step in the message, e.g. ``mount proc on /proc: ...``.
"""

from __future__ import annotations

import _ctypes
import os
import struct

# A few ctypes types built straight on ``_ctypes``: ``import ctypes`` costs ~10 ms, as much as
# a third of a container start.


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


class _IntFn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _LongFn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class _Libc:
    def __init__(self) -> None:
        self._handle = _ctypes.dlopen(None, os.RTLD_NOW)


_lib = _Libc()
_fns: dict[str, _ctypes.CFuncPtr] = {}


def _fn(name: str, cls: type = _IntFn) -> _ctypes.CFuncPtr:
    f = _fns.get(name)
    if f is None:
        f = _fns[name] = cls((name, _lib))
    return f


def _buffer(data: bytes) -> _ctypes.Array:
    class _Buf(_ctypes.Array):
        _type_ = c_char
        _length_ = max(len(data), 1)

    return _Buf.from_buffer_copy(data.ljust(max(len(data), 1), b"\0"))


def _syscall(nr: int, *args: object) -> int:
    conv = [c_long(a) if isinstance(a, int) else a for a in args]
    return _fn("syscall", _LongFn)(c_long(nr), *conv)


# clone / unshare / setns flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# /proc/<pid>/ns/<name> for each OCI namespace type
NAMESPACE_PROC_NAMES = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8

SYS_PIVOT_ROOT = 155
SYS_SETNS = 308
SYS_UNSHARE = 272
SYS_SECCOMP = 317
SYS_PIDFD_SEND_SIGNAL = 424
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

# open_tree / move_mount / mount_setattr
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_SETHOSTNAME = 170
SYS_SETDOMAINNAME = 171
SYS_MOUNT = 165
SYS_UMOUNT2 = 166

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(res: int, what: str) -> int:
    if res < 0:
        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err).lower()}")
    return res


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else s.encode()


def unshare(flags: int) -> None:
    _check(_fn("unshare")(c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0, what: str = "setns") -> None:
    _check(_fn("setns")(c_int(fd), c_int(nstype)), what)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    res = _fn("mount")(_b(source), _b(target), _b(fstype), c_ulong(flags), _b(data))
    if res < 0:
        err = _ctypes.get_errno()
        kind = fstype if fstype and not flags & (MS_BIND | MS_REMOUNT | MS_MOVE) else (source or "")
        if flags & MS_REMOUNT:
            kind = "remount"
        elif flags & (MS_PRIVATE | MS_SLAVE | MS_SHARED | MS_UNBINDABLE) and not flags & MS_BIND:
            kind = "propagation"
        raise OSError(err, f"mount {kind} on {target}: {os.strerror(err).lower()}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_fn("umount2")(_b(target), c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), f"pivot_root {new_root}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _fn("prctl")(c_int(option), c_ulong(arg2), c_ulong(arg3), c_ulong(arg4), c_ulong(arg5)),
        f"prctl({option})",
    )


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_fn("sethostname")(b, c_ulong(len(b))), f"sethostname {name}")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_fn("setdomainname")(b, c_ulong(len(b))), f"setdomainname {name}")


def capget() -> tuple[int, int, int]:
    hdr = _buffer(struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0))
    data = _buffer(bytes(24))
    _check(_syscall(SYS_CAPGET, hdr, data), "capget")
    e0, p0, i0, e1, p1, i1 = struct.unpack("=6I", data.raw)
    return e0 | (e1 << 32), p0 | (p1 << 32), i0 | (i1 << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _buffer(struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0))
    m = 0xFFFFFFFF
    data = _buffer(struct.pack("=6I", effective & m, permitted & m, inheritable & m,
                               (effective >> 32) & m, (permitted >> 32) & m, (inheritable >> 32) & m))
    _check(_syscall(SYS_CAPSET, hdr, data), "capset")


def bounding_set(last_cap: int) -> int:
    """The calling process's capability bounding set as a bit mask."""
    mask = 0
    for cap in range(last_cap + 1):
        if _fn("prctl")(c_int(PR_CAPBSET_READ), c_ulong(cap), c_ulong(0), c_ulong(0), c_ulong(0)) == 1:
            mask |= 1 << cap
    return mask


def seccomp_set_filter(program: bytes, flags: int = 0) -> int:
    """Install a classic BPF program (8-byte sock_filter records) as a seccomp filter.

    With ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` the result is the notification fd (close-on-exec)."""
    buf = _buffer(program)
    prog = _buffer(struct.pack("=HxxxxxxQ", len(program) // 8, _ctypes.addressof(buf)))
    return _check(_syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, prog), "seccomp: load filter")


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A duplicate of another process's fd (needs ptrace access to it); close-on-exec."""
    return _check(_syscall(SYS_PIDFD_GETFD, pidfd, targetfd, 0), f"pidfd_getfd {targetfd}")


def open_tree(path: str, flags: int, dirfd: int = -100) -> int:
    """``open_tree(2)``: with OPEN_TREE_CLONE a detached copy of the mount at ``path``."""
    return _check(_syscall(SYS_OPEN_TREE, dirfd, _b(path), flags | OPEN_TREE_CLOEXEC), f"open_tree {path}")


def move_mount_fd(fd: int, target: str) -> None:
    """Attach the detached mount tree ``fd`` (from open_tree) at ``target``."""
    _check(_syscall(SYS_MOVE_MOUNT, fd, b"", -100, _b(target), MOVE_MOUNT_F_EMPTY_PATH), f"move_mount on {target}")


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, recursive: bool = True) -> None:
    """``mount_setattr(2)`` on the mount at ``path`` (and every mount below it if ``recursive``)."""
    attr = _buffer(struct.pack("=QQQQ", attr_set, attr_clr, 0, 0))
    _check(_syscall(SYS_MOUNT_SETATTR, -100, _b(path), AT_RECURSIVE if recursive else 0, attr, 32),
           f"mount_setattr {path}")


def pidfd_open(pid: int) -> int:
    return _check(_syscall(SYS_PIDFD_OPEN, pid, 0), f"pidfd_open {pid}")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(
        _syscall(SYS_PIDFD_SEND_SIGNAL, pidfd, sig, 0, 0),
        f"signal {sig}",
    )


def sock_filter(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)
