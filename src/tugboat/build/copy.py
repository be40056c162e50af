"""COPY and ADD into a mounted root filesystem, with Docker's rules.

- Destination: relative to WORKDIR; ending in ``/`` (or ``.``) means a directory; several sources
  need such a destination ("When using COPY with more than one source file, the destination must
  be a directory and end with a /").
- A source directory: its *contents* are copied into the destination (created if missing).
- A source file: into the destination directory (trailing ``/``, or an existing directory), or
  as the destination path.
- Owners become 0:0 unless ``--chown``; ``--chmod`` sets the mode of what is copied; modes and
  mtimes are kept otherwise. Missing parent directories are created 0755 (owned by --chown's user).
- ADD extracts local tar archives (plain, gzip, bzip2, xz; detected by content, not by name) into
  the destination directory, and downloads URLs (mode 0600, mtime from Last-Modified).
- Paths in the image are resolved with its symlinks taken relative to its root
  (``/bin -> usr/bin`` works; an absolute symlink never leads out to the host).
- ``--parents``: each source keeps its path (as named, below the context or stage root) under the
  destination directory; a ``/./`` in the source marks where the kept part starts
  (``COPY --parents a/./b/c.txt /d/`` gives ``/d/b/c.txt``).
- ``--exclude=PATTERN`` (repeatable, .dockerignore syntax): matched against paths relative to a
  directory source (``--exclude=*.log dir /d/`` skips ``dir/x.log``, not ``dir/sub/x.log``: use
  ``**/*.log``), and against the name of each file or directory a glob source matched.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from typing import Any

from tugboat.build.context import scoped_join, walk_tree
from tugboat.build.dockerignore import Matcher
from tugboat.errors import InvalidArgument
from tugboat.oci.user import read_colon_file


class CopyOptions:
    def __init__(self, chown: tuple[int, int] | None = None, chmod: int | None = None, add: bool = False) -> None:
        self.chown = chown
        self.chmod = chmod
        self.add = add


def parse_chmod(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise InvalidArgument(f"invalid chmod parameter {value!r}: it must be an octal number") from None
    if mode < 0 or mode > 0o7777:
        raise InvalidArgument(f"invalid chmod parameter {value!r}")
    return mode


def resolve_chown(rootfs: str, spec: str) -> tuple[int, int]:
    """``user[:group]`` (names looked up in the image's /etc/passwd and /etc/group) -> (uid, gid)."""
    user, _, group = spec.partition(":")
    if not user:
        raise InvalidArgument(f"invalid chown parameter {spec!r}")
    if user.isdigit():
        uid = int(user)
        gid = uid if not group else None
    else:
        for p in read_colon_file(scoped_join(rootfs, "etc/passwd")):
            if len(p) >= 4 and p[0] == user:
                uid = int(p[2])
                gid = int(p[3]) if not group else None
                break
        else:
            raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: can't find uid for "
                                  f"user {user}: no such user: {user}")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for g in read_colon_file(scoped_join(rootfs, "etc/group")):
                if len(g) >= 3 and g[0] == group:
                    gid = int(g[2])
                    break
            else:
                raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: can't find gid "
                                      f"for group {group}: no such group: {group}")
    assert gid is not None
    return uid, gid


def is_archive(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if head.startswith(b"\x1f\x8b") or head.startswith(b"BZh") or head.startswith(b"\xfd7zXZ\x00"):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def dest_is_dir(dest: str) -> bool:
    return dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")


def absolute_dest(dest: str, workdir: str) -> str:
    """The destination as an absolute, lexically cleaned image path (a trailing ``/`` kept)."""
    import posixpath

    if not dest.startswith("/"):
        dest = workdir.rstrip("/") + "/" + dest
    clean = posixpath.normpath(dest)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    return clean + "/" if dest_is_dir(dest) and clean != "/" else clean


class Copier:
    def __init__(self, rootfs: str, opts: CopyOptions) -> None:
        self.rootfs = rootfs
        self.opts = opts
        self.created_owner = opts.chown or (0, 0)

    # ---- destination paths ------------------------------------------------------------------

    def mkdir_p(self, rel: str) -> str:
        """Create ``rel`` (image path) and missing parents; returns the host path."""
        parts = [p for p in rel.split("/") if p]
        cur_rel = ""
        host = self.rootfs
        for part in parts:
            cur_rel = f"{cur_rel}/{part}"
            host = scoped_join(self.rootfs, cur_rel)
            if os.path.isdir(host):
                continue
            if os.path.lexists(host):
                os.unlink(host)
            parent = os.path.dirname(host)
            if parent != self.rootfs and not os.path.isdir(parent):  # a dangling symlink's target chain
                self.mkdir_p("/" + os.path.relpath(parent, self.rootfs))
            os.mkdir(host, 0o755)
            os.chmod(host, 0o755)
            os.lchown(host, *self.created_owner)
            cur_rel = "/" + os.path.relpath(host, self.rootfs)
        return scoped_join(self.rootfs, rel)

    # ---- copying ------------------------------------------------------------------------------

    def _apply_meta(self, path: str, st: os.stat_result, is_link: bool = False) -> None:
        uid, gid = self.opts.chown or (0, 0)
        os.lchown(path, uid, gid)
        if not is_link:
            mode = self.opts.chmod if self.opts.chmod is not None else stat.S_IMODE(st.st_mode)
            os.chmod(path, mode)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _clear(self, target: str, want_dir: bool) -> None:
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)
        elif os.path.isdir(target) and not want_dir:
            _shutil().rmtree(target)

    def copy_entry(self, src: str, target: str, st: os.stat_result) -> None:
        m = st.st_mode
        if stat.S_ISDIR(m):
            if os.path.islink(target) and os.path.isdir(target):
                pass  # an existing symlink to a directory in the image: write through it
            elif not os.path.isdir(target):
                self._clear(target, True)
                os.mkdir(target, 0o755)
            self._apply_meta(target, st)
        elif stat.S_ISREG(m):
            self._clear(target, False)
            with open(src, "rb") as fi, open(target, "wb") as fo:
                _shutil().copyfileobj(fi, fo, 1 << 20)
            self._apply_meta(target, st)
        elif stat.S_ISLNK(m):
            self._clear(target, False)
            os.symlink(os.readlink(src), target)
            self._apply_meta(target, st, is_link=True)
        elif stat.S_ISFIFO(m) or stat.S_ISCHR(m) or stat.S_ISBLK(m):
            self._clear(target, False)
            os.mknod(target, m, st.st_rdev)
            self._apply_meta(target, st)
        # sockets are skipped, as Docker does

    def copy_tree(self, src_root: str, rel: str, target: str, excluded: Callable[[str], bool],
                  matcher: Any) -> None:
        """Copy the contents of directory ``src_root/rel`` into the host directory ``target``."""
        dirs: list[tuple[str, os.stat_result]] = []
        base = rel
        for path, st in walk_tree(src_root, rel, excluded, matcher):
            if path == base:
                continue
            sub = path[len(base) + 1 :] if base != "." else path
            dst = self._target_in(target, sub)
            parent = os.path.dirname(dst)
            if not os.path.isdir(parent):  # an ignored directory with a re-included file inside
                self.mkdir_p("/" + os.path.relpath(parent, self.rootfs))
            self.copy_entry(os.path.join(src_root, path), dst, st)
            if stat.S_ISDIR(st.st_mode):
                dirs.append((dst, st))
        for dst, st in reversed(dirs):  # directory mtimes after their contents are written
            with contextlib.suppress(OSError):
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _target_in(self, target_dir: str, sub: str) -> str:
        parent, _, name = sub.rpartition("/")
        if not parent:
            return os.path.join(target_dir, name)
        rel_parent = os.path.relpath(target_dir, self.rootfs) + "/" + parent
        return os.path.join(scoped_join(self.rootfs, rel_parent), name)

    def extract(self, archive: str, target_dir: str) -> None:
        """Unpack a tar into ``target_dir`` inside the image: paths and symlinks resolve inside the
        image root (as Docker's chrooted unpack does), never outside it."""
        import tarfile

        base = "/" + os.path.relpath(target_dir, self.rootfs).lstrip(".")
        dirs: list[tuple[str, tarfile.TarInfo]] = []
        try:
            with tarfile.open(archive, mode="r:*") as tf:
                for m in tf:
                    name = m.name.lstrip("/")
                    parts = [p for p in name.split("/") if p not in ("", ".")]
                    if not parts or ".." in parts:
                        if ".." in parts:
                            raise InvalidArgument(f"ADD: archive entry {m.name!r} leaves the destination")
                        continue
                    rel = base.rstrip("/") + "/" + "/".join(parts)
                    parent_rel = rel.rsplit("/", 1)[0] or "/"
                    parent = scoped_join(self.rootfs, parent_rel)
                    if not os.path.isdir(parent):
                        parent = self.mkdir_p(parent_rel)
                    path = os.path.join(parent, parts[-1])
                    uid, gid = self.opts.chown if self.opts.chown is not None else (m.uid, m.gid)
                    if m.isdir():
                        if not os.path.isdir(path):
                            self._clear(path, True)
                            os.mkdir(path, 0o755)
                        os.lchown(path, uid, gid)
                        dirs.append((path, m))
                        continue
                    self._clear(path, False)
                    if m.isreg():
                        src = tf.extractfile(m)
                        assert src is not None
                        with open(path, "wb") as f:
                            _shutil().copyfileobj(src, f, 1 << 20)
                    elif m.issym():
                        os.symlink(m.linkname, path)
                    elif m.islnk():
                        target = scoped_join(self.rootfs, base.rstrip("/") + "/" + m.linkname.lstrip("/"),
                                             follow_last=False)
                        os.link(target, path)
                        continue
                    elif m.ischr() or m.isblk() or m.isfifo():
                        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
                        os.mknod(path, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
                    else:
                        continue
                    os.lchown(path, uid, gid)
                    if not m.issym():
                        os.chmod(path, m.mode & 0o7777)
                        os.utime(path, (m.mtime, m.mtime))
                for path, m in reversed(dirs):
                    os.chmod(path, m.mode & 0o7777)
                    os.utime(path, (m.mtime, m.mtime))
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidArgument(f"ADD: cannot unpack {os.path.basename(archive)}: {exc}") from None


def copy_sources(
    rootfs: str,
    src_root: str,
    sources: list[tuple[str, str]],
    dest: str,
    workdir: str,
    opts: CopyOptions,
    *,
    source_args: int,
    excluded: Callable[[str], bool] = lambda _p: False,
    matcher: Matcher | None = None,
    cmd: str = "COPY",
    keep: list[str] | None = None,
    exclude: Matcher | None = None,
) -> None:
    """Copy resolved sources (``(named, real)`` paths under ``src_root``) into ``rootfs``.
    ``keep`` (``--parents``): for each source, the path to recreate under the destination
    directory. ``exclude`` (``--exclude``): patterns relative to each directory source."""
    want_dir = dest_is_dir(dest) or keep is not None
    dest_abs = absolute_dest(dest, workdir)
    if keep is not None and not dest_abs.endswith("/"):
        dest_abs += "/"
    if (source_args > 1 or len(sources) > 1) and not want_dir:
        existing = scoped_join(rootfs, dest_abs)
        if not os.path.isdir(existing) or source_args > 1:
            raise InvalidArgument(
                f"When using {cmd} with more than one source file, the destination must be a directory and end with a /"
            )
        want_dir = True
    cp = Copier(rootfs, opts)
    for i, (named, real) in enumerate(sources):
        src = os.path.join(src_root, real) if real != "." else src_root
        st = os.stat(src) if os.path.islink(src) else os.lstat(src)
        kept = keep[i].strip("/") if keep is not None else ""
        if stat.S_ISDIR(st.st_mode):
            target = cp.mkdir_p(dest_abs + kept if kept not in ("", ".") else dest_abs)
            cp.copy_tree(src_root, real, target, excluding(excluded, exclude, real),
                         _Descend(matcher, exclude, real) if exclude else matcher)
            if kept not in ("", "."):
                cp._apply_meta(target, st)  # --parents recreates the directory itself
            continue
        if kept not in ("", "."):
            parent_rel, _, name = (dest_abs + kept).rpartition("/")
            target = os.path.join(cp.mkdir_p(parent_rel or "/"), name)
            cp.copy_entry(src, target, st)
            continue
        if opts.add and stat.S_ISREG(st.st_mode) and is_archive(src):
            target = cp.mkdir_p(dest_abs)
            cp.extract(src, target)
            continue
        host_dest = scoped_join(rootfs, dest_abs)
        if want_dir or os.path.isdir(host_dest):
            parent = cp.mkdir_p(dest_abs)
            target = os.path.join(parent, os.path.basename(named.rstrip("/")) or os.path.basename(real))
        else:
            parent_rel, _, name = dest_abs.rstrip("/").rpartition("/")
            parent = cp.mkdir_p(parent_rel or "/")
            target = os.path.join(parent, name)
        cp.copy_entry(src, target, st)


def excluding(excluded: Callable[[str], bool], exclude: Matcher | None, base: str) -> Callable[[str], bool]:
    """``excluded`` (context-relative, .dockerignore) plus ``exclude`` matched relative to ``base``."""
    if exclude is None or not exclude:
        return excluded
    prefix = "" if base in (".", "") else base.rstrip("/") + "/"

    def check(path: str) -> bool:
        if excluded(path):
            return True
        return path.startswith(prefix) and exclude.excluded(path[len(prefix):])

    return check


class _Descend:
    """For a walk: whether an excluded directory may hold re-included (``!``) files, by the
    .dockerignore rules or by the ``--exclude`` ones (relative to the source ``base``)."""

    def __init__(self, matcher: Matcher | None, exclude: Matcher, base: str) -> None:
        self.matcher = matcher
        self.exclude = exclude
        self.prefix = "" if base in (".", "") else base.rstrip("/") + "/"

    def may_contain_included(self, path: str) -> bool:
        if self.matcher is not None and self.matcher.may_contain_included(path):
            return True
        return path.startswith(self.prefix) and self.exclude.may_contain_included(path[len(self.prefix):])


def write_file(rootfs: str, dest: str, workdir: str, data: bytes, name: str, opts: CopyOptions,
               mode: int = 0o644, mtime: float | None = None) -> None:
    """COPY <<EOF (heredoc) and ADD <url>: one file of given bytes."""
    dest_abs = absolute_dest(dest, workdir)
    cp = Copier(rootfs, opts)
    host_dest = scoped_join(rootfs, dest_abs)
    if dest_is_dir(dest) or os.path.isdir(host_dest):
        parent = cp.mkdir_p(dest_abs)
        target = os.path.join(parent, name)
    else:
        parent_rel, _, fname = dest_abs.rstrip("/").rpartition("/")
        parent = cp.mkdir_p(parent_rel or "/")
        target = os.path.join(parent, fname)
    cp._clear(target, False)
    with open(target, "wb") as f:
        f.write(data)
    uid, gid = opts.chown or (0, 0)
    os.lchown(target, uid, gid)
    os.chmod(target, opts.chmod if opts.chmod is not None else mode)
    if mtime is not None:
        os.utime(target, (mtime, mtime))


def _shutil() -> Any:
    """``shutil`` on first use: it imports bz2 and lzma, start-up time a cached build does not need."""
    import shutil

    return shutil
