"""File helpers shared by the v1 and v2 managers."""

from __future__ import annotations

import errno
import os
import time


def write(dirpath: str, name: str, value: str) -> None:
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"cgroup: open {path}: {os.strerror(e.errno or 0).lower()}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise OSError(e.errno, f"cgroup: write {value!r} to {path}: {os.strerror(e.errno or 0).lower()}") from None
    finally:
        os.close(fd)


def read(dirpath: str, name: str) -> str:
    with open(os.path.join(dirpath, name)) as f:
        return f.read().strip()


def read_int(dirpath: str, name: str) -> int | None:
    try:
        v = read(dirpath, name)
    except OSError:
        return None
    if v == "max":
        return -1
    try:
        return int(v.split()[0])
    except (ValueError, IndexError):
        return None


def read_pids(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rmdir_retry(path: str, attempts: int = 50) -> None:
    """rmdir a cgroup; EBUSY while exiting processes are still being reaped, so retry briefly."""
    for i in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or i == attempts - 1:
                raise OSError(e.errno, f"cgroup: remove {path}: {os.strerror(e.errno or 0).lower()}") from None
            time.sleep(0.01)


def read_pids_recursive(dirpath: str) -> list[int]:
    """cgroup.procs of a cgroup and of every cgroup below it (sub-cgroups made inside)."""
    out = read_pids(os.path.join(dirpath, "cgroup.procs"))
    try:
        entries = list(os.scandir(dirpath))
    except OSError:
        return out
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            out.extend(read_pids_recursive(e.path))
    return out


def rmdir_tree(path: str) -> None:
    """Remove a cgroup and the sub-cgroups made below it, deepest first (rmdir alone first:
    the common case has none, and listing the directory costs more than trying)."""
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise OSError(e.errno, f"cgroup: remove {path}: {os.strerror(e.errno or 0).lower()}") from None
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            rmdir_tree(entry.path)
    rmdir_retry(path)
