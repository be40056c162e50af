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
