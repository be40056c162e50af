"""Helpers shared by the images area's tests: build tar layers in memory."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from typing import Any


def entry(name: str, kind: str = "file", data: bytes = b"", **kw: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.mtime = kw.get("mtime", 1_600_000_000)
    ti.uid, ti.gid = kw.get("uid", 0), kw.get("gid", 0)
    ti.mode = kw.get("mode", 0o755 if kind == "dir" else 0o644)
    if kind == "file":
        ti.type, ti.size = tarfile.REGTYPE, len(data)
        if "xattrs" in kw:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in kw["xattrs"].items()}
        return ti, data
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, kw["target"]
    elif kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, kw["target"]
    elif kind == "char":
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, kw.get("major", 1), kw.get("minor", 3)
    elif kind == "block":
        ti.type, ti.devmajor, ti.devminor = tarfile.BLKTYPE, kw.get("major", 7), kw.get("minor", 0)
    elif kind == "fifo":
        ti.type = tarfile.FIFOTYPE
    return ti, None


def make_tar(entries: Iterable[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)
