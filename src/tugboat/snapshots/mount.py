"""mount(2)/umount2(2) through ctypes (no fork of /bin/mount per container)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MNT_DETACH = 2
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str | None = None) -> None:
    rc = _lib().mount(
        source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    )
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} on {target}: {os.strerror(e)}")


def umount(target: str, flags: int = 0) -> None:
    rc = _lib().umount2(target.encode(), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def is_mountpoint(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if line.split()[4] == path:
                    return True
    except OSError:
        return False
    return False


# the new mount API (Linux >= 6.8 for "lowerdir+"): no page-size limit on the layer list
_SYS = {"fsopen": 430, "fsconfig": 431, "fsmount": 432, "move_mount": 429}
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def _syscall(name: str, *args: object) -> int:
    lib = _lib()
    lib.syscall.restype = ctypes.c_long
    rc = lib.syscall(ctypes.c_long(_SYS[name]), *args)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{name}: {os.strerror(e)}")
    return int(rc)


def mount_overlay_fsconfig(target: str, lowerdirs: list[str], upperdir: str | None, workdir: str | None) -> None:
    """Mount overlayfs passing each lower dir separately (``lowerdir+``): any number of layers."""
    fs = _syscall("fsopen", b"overlay", ctypes.c_uint(1))  # FSOPEN_CLOEXEC
    try:
        def setstr(key: str, value: str) -> None:
            _syscall("fsconfig", ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_SET_STRING), key.encode(),
                     value.encode(), ctypes.c_int(0))

        for d in lowerdirs:
            setstr("lowerdir+", d)
        if upperdir and workdir:
            setstr("upperdir", upperdir)
            setstr("workdir", workdir)
        _syscall("fsconfig", ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0))
        mfd = _syscall("fsmount", ctypes.c_int(fs), ctypes.c_uint(1), ctypes.c_uint(0))  # FSMOUNT_CLOEXEC
        try:
            _syscall("move_mount", ctypes.c_int(mfd), b"", ctypes.c_int(AT_FDCWD), target.encode(),
                     ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        finally:
            os.close(mfd)
    finally:
        os.close(fs)
