"""Apply an OCI layer tar to a directory, and compute a layer tar from an overlay upper dir.

``apply_layer`` reads gzip, zstd or plain tar streams with its own tar reader (faster than
:mod:`tarfile` and strict about hostile input): regular files, dirs, symlinks, hardlinks, device
nodes, fifos, ownership, modes, mtimes and xattrs (PAX ``SCHILY.xattr.*``). OCI whiteouts become
overlay whiteouts (char device 0:0) and opaque dirs (``trusted.overlay.opaque=y``), or, with
``whiteouts="delete"``, delete what they hide (flattening onto one tree). Entries with ``..`` or
absolute paths, symlinks and hardlinks that resolve outside the root, truncated or corrupt
compression and bad headers raise :class:`LayerError` (``DataCorruption``). Callers unpack into
a fresh directory and rename it into place on success (the snapshotter does), so nothing is
stored when a layer is refused.

gzip is decompressed by the ``gzip`` binary in a child process, as ``tar -xzf`` does, so
decompression and file writing run on two cores.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from tugboat.errors import DataCorruption

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
READ_CHUNK = 1 << 20
_IS_ROOT = os.geteuid() == 0

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(DataCorruption):
    """A layer tar is malformed, truncated or hostile."""


@dataclass
class ApplyResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    size: int  # bytes of the uncompressed tar stream
    entries: int
    unpacked_size: int  # bytes of regular file content


def detect_compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


# --------------------------------------------------------------------------------------------
# decompressing sources: objects with read(n) -> bytes, close() -> None (raises on corruption)


class _RawSource:
    def __init__(self, f: IO[bytes], head: bytes) -> None:
        self.f = f
        self.head = head

    def read(self, n: int) -> bytes:
        if self.head:
            h, self.head = self.head, b""
            return h
        return self.f.read(n)

    def close(self) -> None:
        pass


class _GzipProcSource:
    """``gzip -dc`` in a child process; a feeder thread writes the compressed input."""

    def __init__(self, f: IO[bytes], head: bytes, fd: int | None) -> None:
        self.err = b""
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None
        if fd is not None and not head:
            self.proc = subprocess.Popen(
                ["gzip", "-dc"], stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        else:
            self.proc = subprocess.Popen(
                ["gzip", "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                bufsize=0,
            )
            self._feeder = threading.Thread(target=self._feed, args=(f, head), daemon=True)
            self._feeder.start()
        assert self.proc.stdout is not None
        self.out = self.proc.stdout

    def _feed(self, f: IO[bytes], head: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            if head:
                stdin.write(head)
            while chunk := f.read(READ_CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # surfaced in close()
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def read(self, n: int) -> bytes:
        return self.out.read(n)

    def close(self, drain: bool = True) -> None:
        if self.out.closed:
            return
        if drain:
            while self.out.read(READ_CHUNK):
                pass
        else:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.out.close()
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()
        self.proc.stderr.close()
        rc = self.proc.wait()
        if self._feeder is not None:
            self._feeder.join()
        if drain and self._feed_error is not None:
            raise self._feed_error
        if drain and rc != 0:
            msg = self.err.decode(errors="replace").strip().replace("gzip: stdin: ", "")
            raise LayerError(f"corrupt or truncated gzip layer: {msg or 'gzip exited ' + str(rc)}")


class _ZlibSource:
    """Fallback gzip decompression in-process."""

    def __init__(self, f: IO[bytes], head: bytes) -> None:
        self.f = f
        self.head = head
        self.d = zlib.decompressobj(wbits=47)
        self.eof = False

    def read(self, n: int) -> bytes:
        while True:
            if self.eof:
                return b""
            raw = self.head or self.f.read(READ_CHUNK)
            self.head = b""
            if not raw:
                if not self.d.eof:
                    raise LayerError("corrupt or truncated gzip layer: unexpected end of file")
                self.eof = True
                return b""
            try:
                out = self.d.decompress(raw)
                while self.d.eof and self.d.unused_data:  # concatenated members
                    rest = self.d.unused_data
                    self.d = zlib.decompressobj(wbits=47)
                    out += self.d.decompress(rest)
            except zlib.error as exc:
                raise LayerError(f"corrupt gzip layer: {exc}") from None
            if out:
                return out

    def close(self) -> None:
        pass


class _ZstdSource:
    def __init__(self, f: IO[bytes], head: bytes) -> None:
        import io

        import zstandard

        self._src = _RawSource(f, head)

        class _R(io.RawIOBase):
            def readable(self_inner) -> bool:
                return True

            def readinto(self_inner, b: Any) -> int:
                data = self._src.read(len(b))
                b[: len(data)] = data
                return len(data)

        self.reader = zstandard.ZstdDecompressor().stream_reader(_R(), read_across_frames=True)

    def read(self, n: int) -> bytes:
        try:
            return self.reader.read(n)
        except Exception as exc:
            raise LayerError(f"corrupt zstd layer: {exc}") from None

    def close(self) -> None:
        pass


def open_layer_source(src: IO[bytes] | str, compression: str | None = None) -> tuple[Any, IO[bytes] | None]:
    """A decompressed byte source for a layer blob (path or binary file object)."""
    owned: IO[bytes] | None = None
    if isinstance(src, str | os.PathLike):
        owned = open(src, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        f: IO[bytes] = owned
    else:
        f = src
    fd: int | None = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = f.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            fd = None
    if fd is not None:
        head = os.pread(fd, 4, os.lseek(fd, 0, os.SEEK_CUR))
        consumed = b""
    else:
        head = consumed = f.read(4)
    if compression is None:
        compression = detect_compression(head)
    if compression == "gzip":
        if shutil.which("gzip"):
            return _GzipProcSource(f, consumed, fd if not consumed else None), owned
        return _ZlibSource(f, consumed), owned
    if compression == "zstd":
        return _ZstdSource(f, consumed), owned
    if compression == "":
        return _RawSource(f, consumed), owned
    raise LayerError(f"unsupported layer compression {compression!r}")


@contextlib.contextmanager
def decompressed(src: IO[bytes] | str, compression: str | None = None) -> Any:
    """A decompressed source (``.read(n)``) of a layer or archive; on success the decompressor's
    exit status is checked (``LayerError`` if the input was corrupt), on error it is killed."""
    source, owned = open_layer_source(src, compression)
    ok = False
    try:
        yield source
        source.close()
        ok = True
    finally:
        if not ok and isinstance(source, _GzipProcSource):
            source.close(drain=False)
        if owned is not None:
            owned.close()


# --------------------------------------------------------------------------------------------
# tar reading


class _Stream:
    """Buffered, hashed reads over a decompressed source."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.buf = b""
        self.mv = memoryview(b"")
        self.pos = 0
        self.hasher = hashlib.sha256()
        self.total = 0

    def _more(self) -> bool:
        chunk = self.src.read(READ_CHUNK)
        if not chunk:
            return False
        self.hasher.update(chunk)
        self.total += len(chunk)
        if self.pos < len(self.buf):
            self.buf = self.buf[self.pos:] + chunk
        else:
            self.buf = chunk
        self.mv = memoryview(self.buf)
        self.pos = 0
        return True

    def read(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            if not self._more():
                raise LayerError("truncated layer tar: unexpected end of archive")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def copy_to(self, fd: int, n: int) -> None:
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0:
                if not self._more():
                    raise LayerError("truncated layer tar: unexpected end of archive")
                continue
            k = min(avail, n)
            mv = self.mv[self.pos:self.pos + k]
            while mv:
                w = os.write(fd, mv)
                mv = mv[w:]
            self.pos += k
            n -= k

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0:
                if not self._more():
                    raise LayerError("truncated layer tar: unexpected end of archive")
                continue
            k = min(avail, n)
            self.pos += k
            n -= k

    def drain(self) -> None:
        self.pos = len(self.buf)
        while self._more():
            self.pos = len(self.buf)


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256
        v = int.from_bytes(field[1:], "big")
        if field[0] & 0x40:
            v -= 1 << (8 * (len(field) - 1))
        return v
    s = field.split(b"\0", 1)[0].strip()
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise LayerError(f"invalid number {s!r} in tar header") from None


def _cstr(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


MAX_SPECIAL_HEADER = 1 << 20
"""The largest PAX (``x``/``g``) or GNU long-name (``L``/``K``) header body we read into memory;
Go's archive/tar (docker, containerd) refuses larger ones too."""
_SPECIAL_NAMES = {b"x": "PAX", b"g": "PAX global", b"L": "GNU long name", b"K": "GNU long link name"}


def _too_big(typ: bytes, size: int, held: int) -> None:
    what = _SPECIAL_NAMES[typ]
    if held == size:
        raise LayerError(f"refusing layer: tar {what} header of {size} bytes (the limit is {MAX_SPECIAL_HEADER} bytes)")
    raise LayerError(f"refusing layer: tar {what} headers of {held} bytes in all (the limit is {MAX_SPECIAL_HEADER} "
                     f"bytes)")


def _parse_pax(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError("invalid PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise LayerError("invalid PAX header record length")
        rec = data[sp + 1:pos + length - 1]
        eq = rec.find(b"=")
        if eq < 0:
            raise LayerError("invalid PAX header record")
        out[rec[:eq].decode("utf-8", "surrogateescape")] = rec[eq + 1:]
        pos += length
    return out


def _fsdecode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def clean_path(name: str, what: str = "entry") -> str:
    """The relative path of a tar entry, or ``LayerError`` for absolute paths and ``..``."""
    if name.startswith("/"):
        raise LayerError(f"refusing layer: {what} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise LayerError(f"refusing layer: {what} {name!r} contains '..'")
    return "/".join(parts)


class _Applier:
    def __init__(self, root: str, whiteouts: str, strict_symlinks: bool) -> None:
        self.root = os.path.abspath(root).rstrip("/") or "/"
        self.whiteouts = whiteouts
        self.strict_symlinks = strict_symlinks
        self.dirs: set[str] = {""}
        self.created: set[str] = set()
        self.dir_times: list[tuple[str, int]] = []
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.entries = 0
        self.unpacked = 0

    def full(self, rel: str) -> str:
        return self.root + "/" + rel if rel else self.root

    # resolve a path's parent directories inside the root, following symlinks scoped to the root
    def resolve_parent(self, rel: str) -> tuple[str, str]:
        i = rel.rfind("/")
        if i < 0:
            return "", rel
        parent, base = rel[:i], rel[i + 1:]
        if parent in self.dirs:
            return parent, base
        return self._resolve_dir(parent), base

    def _resolve_dir(self, rel: str, depth: int = 0) -> str:
        if depth > 40:
            raise LayerError(f"refusing layer: too many levels of symbolic links at {rel!r}")
        cur = ""
        parts = rel.split("/")
        for idx, comp in enumerate(parts):
            nxt = cur + "/" + comp if cur else comp
            if nxt in self.dirs:
                cur = nxt
                continue
            p = self.full(nxt)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, 0o755)
                self.dirs.add(nxt)
                cur = nxt
                continue
            if stat.S_ISDIR(st.st_mode):
                self.dirs.add(nxt)
                cur = nxt
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                base = "" if target.startswith("/") else cur
                joined = (base + "/" + target) if base else target
                resolved = _scoped_normpath(joined)
                rest = "/".join(parts[idx + 1:])
                full_rel = resolved + ("/" + rest if rest and resolved else rest)
                return self._resolve_dir(full_rel, depth + 1) if full_rel else ""
            else:
                raise LayerError(f"refusing layer: {rel!r}: {nxt!r} is not a directory")
        return cur

    def forget(self, rel: str) -> None:
        prefix = rel + "/"
        self.dirs = {d for d in self.dirs if d != rel and not d.startswith(prefix)}

    def remove_existing(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def set_meta(self, path: str, h: dict[str, Any], is_link: bool = False) -> None:
        uid, gid = h["uid"], h["gid"]
        if _IS_ROOT and (uid or gid):
            os.lchown(path, uid, gid)
        if not is_link:
            mode = h["mode"] & 0o7777
            os.chmod(path, mode)
        for k, v in h["xattrs"].items():
            self.setxattr(path, k, v)
        if not is_link:
            os.utime(path, ns=(h["mtime_ns"], h["mtime_ns"]))
        else:
            os.utime(path, ns=(h["mtime_ns"], h["mtime_ns"]), follow_symlinks=False)

    def setxattr(self, path: str, k: str, v: bytes, fd: int | None = None) -> None:
        if k.startswith("trusted.overlay."):
            return  # never let a layer forge overlay metadata
        try:
            if fd is not None:
                os.setxattr(fd, k, v)
            else:
                os.setxattr(path, k, v, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise

    def entry(self, h: dict[str, Any], stream: _Stream) -> None:
        rel = clean_path(h["name"])
        typ = h["type"]
        size = h["size"]
        self.entries += 1
        if rel == "":
            if typ == b"5":
                os.chmod(self.root, h["mode"] & 0o7777)
                if _IS_ROOT and (h["uid"] or h["gid"]):
                    os.chown(self.root, h["uid"], h["gid"])
                self.dir_times.append((self.root, h["mtime_ns"]))
            stream.skip(_padded(size) if typ in _DATA_TYPES else 0)
            return
        parent, base = self.resolve_parent(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base)
            stream.skip(_padded(size) if typ in _DATA_TYPES else 0)
            return
        rel = parent + "/" + base if parent else base
        path = self.full(rel)
        if typ != b"5" and rel in self.dirs:
            self.forget(rel)  # a directory replaced by something else: its cached children are gone
        if typ in (b"0", b"\0", b"7"):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            mode = h["mode"] & 0o7777
            try:
                fd = os.open(path, flags, mode)
            except FileExistsError:
                self.remove_existing(path)
                fd = os.open(path, flags, mode)
            try:
                if size:
                    stream.copy_to(fd, size)
                    pad = (-size) % 512
                    if pad:
                        stream.skip(pad)
                    self.unpacked += size
                uid, gid = h["uid"], h["gid"]
                chowned = False
                if _IS_ROOT and (uid or gid):
                    os.fchown(fd, uid, gid)
                    chowned = True
                if chowned or (mode & self.umask) or (mode & 0o7000):
                    os.fchmod(fd, mode)
                for k, v in h["xattrs"].items():
                    self.setxattr(path, k, v, fd)
                os.utime(fd, ns=(h["mtime_ns"], h["mtime_ns"]))
            finally:
                os.close(fd)
            self.created.add(rel)
        elif typ == b"5":
            existed = False
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                existed = True
                if not (os.path.isdir(path) and not os.path.islink(path)):
                    self.remove_existing(path)
                    os.mkdir(path, 0o755)
            self.dirs.add(rel)
            self.created.add(rel)
            uid, gid = h["uid"], h["gid"]
            if _IS_ROOT and (uid or gid):
                os.lchown(path, uid, gid)
            mode = h["mode"] & 0o7777
            if mode != 0o755 or uid or gid or existed:
                os.chmod(path, mode)
            for k, v in h["xattrs"].items():
                self.setxattr(path, k, v)
            self.dir_times.append((path, h["mtime_ns"]))
        elif typ == b"2":
            target = h["linkname"]
            if self.strict_symlinks and not target.startswith("/"):
                joined = (parent + "/" + target) if parent else target
                if _escapes(joined):
                    raise LayerError(
                        f"refusing layer: symlink {h['name']!r} -> {target!r} points outside the root"
                    )
            try:
                os.symlink(target, path)
            except FileExistsError:
                self.remove_existing(path)
                os.symlink(target, path)
            self.dirs.discard(rel)
            self.created.add(rel)
            self.set_meta(path, h, is_link=True)
        elif typ == b"1":
            lrel = clean_path(h["linkname"], "hardlink target")
            if not lrel:
                raise LayerError(f"refusing layer: hardlink {h['name']!r} to the root")
            lparent, lbase = self.resolve_parent(lrel)
            src = self.full(lparent + "/" + lbase if lparent else lbase)
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                raise LayerError(
                    f"refusing layer: hardlink {h['name']!r} -> {h['linkname']!r}: target not found in this layer"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"refusing layer: hardlink {h['name']!r} to a directory")
            if src == path:
                stream.skip(_padded(size))
                return
            try:
                os.link(src, path, follow_symlinks=False)
            except FileExistsError:
                self.remove_existing(path)
                os.link(src, path, follow_symlinks=False)
            self.created.add(rel)
            stream.skip(_padded(size))
        elif typ in (b"3", b"4", b"6"):
            kind = {b"3": stat.S_IFCHR, b"4": stat.S_IFBLK, b"6": stat.S_IFIFO}[typ]
            dev = os.makedev(h["devmajor"], h["devminor"]) if typ != b"6" else 0
            self.remove_existing(path)
            try:
                os.mknod(path, kind | (h["mode"] & 0o7777), dev)
            except PermissionError:
                if typ == b"6":
                    raise
                return  # devices need CAP_MKNOD; skipped unprivileged (as rootless docker does)
            self.created.add(rel)
            self.set_meta(path, h)
        else:
            raise LayerError(f"refusing layer: unsupported tar entry type {typ!r} for {h['name']!r}")

    def whiteout(self, parent: str, base: str) -> None:
        pdir = self.full(parent)
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts == "overlay":
                os.setxattr(pdir, OVERLAY_OPAQUE_XATTR, b"y")
            else:
                for name in os.listdir(pdir):
                    child = parent + "/" + name if parent else name
                    if child not in self.created:
                        self.remove_existing(self.full(child))
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk etc.): ignored, like docker
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", ".."):
            raise LayerError(f"refusing layer: invalid whiteout {base!r}")
        target = pdir + "/" + name
        wrel = parent + "/" + name if parent else name
        if wrel in self.dirs:
            self.forget(wrel)
        if self.whiteouts == "overlay":
            self.remove_existing(target)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        else:
            self.remove_existing(target)

    def finish(self) -> None:
        for path, mtime in reversed(self.dir_times):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


_DATA_TYPES = frozenset({b"0", b"\0", b"7"})


def _padded(n: int) -> int:
    return n + ((-n) % 512)


def _scoped_normpath(p: str) -> str:
    out: list[str] = []
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return "/".join(out)


def _escapes(p: str) -> bool:
    depth = 0
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def _mtime_ns(v: bytes) -> int:
    s = v.decode()
    if "." in s:
        sec, frac = s.split(".", 1)
        frac = (frac + "000000000")[:9]
        neg = sec.startswith("-")
        ns = abs(int(sec or "0")) * 1_000_000_000 + int(frac)
        return -ns if neg else ns
    return int(s) * 1_000_000_000


def _apply_pax(h: dict[str, Any], fields: dict[str, bytes]) -> None:
    """PAX records over the ustar fields of header ``h``."""
    try:
        for k, v in fields.items():
            if k == "path":
                h["name"] = _fsdecode(v)
            elif k == "linkpath":
                h["linkname"] = _fsdecode(v)
            elif k == "size":
                h["size"] = int(v)
            elif k == "uid":
                h["uid"] = int(v)
            elif k == "gid":
                h["gid"] = int(v)
            elif k == "mtime":
                h["mtime_ns"] = _mtime_ns(v)
            elif k.startswith("SCHILY.xattr."):
                h["xattrs"][k[len("SCHILY.xattr."):]] = v
            elif k.startswith("GNU.sparse."):
                raise LayerError("unsupported tar entry: sparse files")
    except ValueError:
        raise LayerError(f"invalid PAX header value for {h['name']!r}") from None
    if h["size"] < 0:
        raise LayerError(f"invalid PAX size for {h['name']!r}")


def read_entries(stream: _Stream, on_entry: Callable[[dict[str, Any], _Stream], None]) -> None:
    """Parse tar headers from ``stream`` and call ``on_entry(header, stream)`` for each member;
    ``on_entry`` must consume the member's data (padded to 512)."""
    global_pax: dict[str, bytes] = {}
    pax: dict[str, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    pax_held = global_held = 0  # bytes of PAX header bodies read for the next entry / globally
    zero_blocks = 0
    while True:
        try:
            hdr = stream.read(512)
        except LayerError:
            if zero_blocks:  # some writers stop after a single zero block
                return
            raise
        if hdr.count(0) == 512:
            zero_blocks += 1
            if zero_blocks == 2:
                return
            continue
        if zero_blocks:
            raise LayerError("invalid tar: data after an end-of-archive block")
        chk = _num(hdr[148:156])
        if chk != sum(hdr) - sum(hdr[148:156]) + 256:
            signed = sum((b - 256 if b > 127 else b) for b in hdr) - sum(
                (b - 256 if b > 127 else b) for b in hdr[148:156]
            ) + 256
            if chk != signed:
                raise LayerError("invalid tar header checksum (not a tar archive, or corrupt)")
        typ = hdr[156:157]
        size = _num(hdr[124:136])
        if size < 0:
            raise LayerError("invalid tar: negative size")
        if typ in (b"x", b"g"):
            # header bodies are read whole into memory: bounded like Go's archive/tar (docker),
            # one by one and all those applying to one entry together
            if typ == b"g":
                global_held += size
                held = global_held
            else:
                pax_held += size
                held = pax_held
            if held > MAX_SPECIAL_HEADER:
                _too_big(typ, size, held)
            data = stream.read(_padded(size))[:size]
            rec = _parse_pax(data)
            if typ == b"g":
                global_pax.update(rec)
            else:
                pax.update(rec)
            continue
        if typ in (b"L", b"K"):
            if size > MAX_SPECIAL_HEADER:
                _too_big(typ, size, size)
            data = _cstr(stream.read(_padded(size))[:size])
            if typ == b"L":
                long_name = data
            else:
                long_link = data
            continue
        magic = hdr[257:263]
        name = _cstr(hdr[0:100])
        if magic == b"ustar\x00":  # POSIX ustar: prefix field
            prefix = _cstr(hdr[345:500])
            if prefix:
                name = prefix + b"/" + name
        fields = {**global_pax, **pax} if global_pax else pax
        if long_name is not None:
            name = long_name
        linkname = long_link if long_link is not None else _cstr(hdr[157:257])
        h: dict[str, Any] = {
            "name": _fsdecode(name),
            "type": typ,
            "mode": _num(hdr[100:108]),
            "uid": _num(hdr[108:116]),
            "gid": _num(hdr[116:124]),
            "size": size,
            "mtime_ns": _num(hdr[136:148]) * 1_000_000_000,
            "linkname": _fsdecode(linkname),
            "devmajor": _num(hdr[329:337]) if typ in (b"3", b"4") else 0,
            "devminor": _num(hdr[337:345]) if typ in (b"3", b"4") else 0,
            "xattrs": {},
        }
        if fields:
            _apply_pax(h, fields)
        if pax_held:
            pax = {}
            pax_held = 0
        long_name = long_link = None
        if typ == b"S":
            raise LayerError("unsupported tar entry: sparse files")
        on_entry(h, stream)


def apply_layer(
    tar_stream: IO[bytes] | str,
    target_dir: str,
    *,
    compression: str | None = None,
    whiteouts: str = "overlay",
    strict_symlinks: bool = True,
    expected_diff_id: str | None = None,
) -> ApplyResult:
    """Unpack a layer (path or binary stream; gzip/zstd/plain, auto-detected) into ``target_dir``.

    Returns the diff ID (sha256 of the uncompressed tar) and sizes. Raises :class:`LayerError`
    for hostile or corrupt input; the caller discards ``target_dir`` then.
    """
    os.makedirs(target_dir, exist_ok=True)
    with decompressed(tar_stream, compression) as src:
        stream = _Stream(src)
        applier = _Applier(target_dir, whiteouts, strict_symlinks)
        read_entries(stream, applier.entry)
        stream.drain()
    applier.finish()
    diff_id = "sha256:" + stream.hasher.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise LayerError(f"layer diff ID mismatch: expected {expected_diff_id}, got {diff_id}")
    return ApplyResult(diff_id, stream.total, applier.entries, applier.unpacked)


# --------------------------------------------------------------------------------------------
# layer diff: overlay upper dir -> OCI layer tar


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in sorted(names):
        if n.startswith("trusted.overlay."):
            continue
        try:
            out["SCHILY.xattr." + n] = os.getxattr(path, n, follow_symlinks=False).decode(
                "utf-8", "surrogateescape"
            )
        except OSError:
            continue
    return out


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _tarinfo(name: str, st: os.stat_result, mtime: float | None) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime) if mtime is None else int(mtime)
    return ti


def write_tree_tar(
    src_dir: str,
    out: IO[bytes],
    *,
    overlay: bool = True,
    mtime: float | None = None,
    uid_gid: tuple[int, int] | None = None,
    include_root: bool = False,
) -> None:
    """Write ``src_dir`` as a tar to ``out``, sorted (reproducible), PAX format.

    With ``overlay`` (an overlay upper dir), char devices 0:0 become ``.wh.NAME`` whiteouts and
    opaque dirs get a ``.wh..wh..opq`` entry. ``mtime`` / ``uid_gid`` force fixed values.
    """
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    seen: dict[tuple[int, int], str] = {}

    def add(rel: str, path: str) -> None:
        st = os.lstat(path)
        m = st.st_mode
        if overlay and stat.S_ISCHR(m) and st.st_rdev == 0:
            parent, _, base = rel.rpartition("/")
            wh = (parent + "/" if parent else "") + WHITEOUT_PREFIX + base
            ti = _tarinfo(wh, st, mtime)
            ti.type, ti.mode, ti.size = tarfile.REGTYPE, 0o644, 0
            ti.uid = ti.gid = 0
            tf.addfile(ti)
            return
        ti = _tarinfo(rel, st, mtime)
        if uid_gid is not None:
            ti.uid, ti.gid = uid_gid
        ti.pax_headers = _xattrs(path)
        if stat.S_ISDIR(m):
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
            if overlay and _is_opaque(path):
                oti = _tarinfo(rel + "/" + WHITEOUT_OPAQUE, st, mtime)
                oti.type, oti.mode, oti.size, oti.uid, oti.gid = tarfile.REGTYPE, 0o644, 0, 0, 0
                tf.addfile(oti)
            for name in sorted(os.listdir(path)):
                add(rel + "/" + name, path + "/" + name)
        elif stat.S_ISREG(m):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, seen[key], 0
                tf.addfile(ti)
                return
            if st.st_nlink > 1:
                seen[key] = rel
            ti.type, ti.size = tarfile.REGTYPE, st.st_size
            with open(path, "rb") as f:
                tf.addfile(ti, f)
        elif stat.S_ISLNK(m):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
            tf.addfile(ti)
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            tf.addfile(ti)
        elif stat.S_ISFIFO(m):
            ti.type = tarfile.FIFOTYPE
            tf.addfile(ti)
        # sockets are skipped, as docker does

    if include_root:
        st = os.lstat(src_dir)
        ti = _tarinfo("./", st, mtime)
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    for name in sorted(os.listdir(src_dir)):
        add(name, os.path.join(src_dir, name))
    tf.close()


def diff_dirs(upper_dir: str, out: IO[bytes]) -> None:
    """The changes recorded in an overlay upper dir as an OCI layer tar written to ``out``."""
    write_tree_tar(upper_dir, out, overlay=True)


class HashingGzipWriter:
    """A file object: hashes the tar bytes (diff ID), gzips them, and writes to ``sink``."""

    def __init__(self, sink: Any, level: int = 6) -> None:
        self.sink = sink
        self.diff_hasher = hashlib.sha256()
        self.size = 0
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, b: bytes) -> int:
        self.diff_hasher.update(b)
        self.size += len(b)
        out = self._z.compress(b)
        if out:
            self.sink.write(out)
        return len(b)

    def close(self) -> None:
        self.sink.write(self._z.flush())

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.diff_hasher.hexdigest()
