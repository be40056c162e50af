"""Atomic file writes: every on-disk format of tugboat is written through ``write_atomic``."""

from __future__ import annotations

import contextlib
import os
import threading


def write_atomic(path: str, data: bytes, *, mode: int | None = None, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` all or nothing: write a temporary file beside it (named
    ``.tmp-<name>.<pid>.<thread>``, so directory listings can skip it), fsync it unless
    ``sync=False``, rename it over ``path``; on error the temporary file is removed.
    ``mode``: the file's exact permissions; by default 0o666 less the umask, as ``open()`` makes."""
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".tmp-{name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666 if mode is None else mode)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def scoped_join(root: str, rel: str, *, follow_last: bool = True, max_hops: int = 40) -> str:
    """``root/rel`` with symlinks resolved as if ``root`` were ``/`` (never escaping ``root``).
    ``follow_last=False`` leaves a symlink in the last component unresolved; more than
    ``max_hops`` symlinks is an ``InvalidArgument``."""
    from tugboat.errors import InvalidArgument

    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = os.path.join(root, *resolved, part)
        if (parts or follow_last) and os.path.islink(cur):
            hops += 1
            if hops > max_hops:
                raise InvalidArgument(f"too many levels of symbolic links: {rel}")
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root
