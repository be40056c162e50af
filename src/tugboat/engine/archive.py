"""``docker cp``, ``export`` and ``diff``: tar streams in and out of a container's filesystem.

Every path inside the container is resolved by a helper process that first ``chroot``s into the
container's root (``/proc/<pid>/root`` of a running container, so its volumes are included, or the
rootfs of a stopped one): a hostile symlink or ``..`` in a path or in an uploaded archive can then
only ever point inside the container (the CVE-2018-15664 class).

A stopped container keeps no mount: its rootfs is mounted for the copy (``Engine.fs_acquire``,
released when the helper is done) and, as docker does, its volumes and bind mounts are mounted at
their destinations inside the helper's own private mount namespace (gone when it exits), so the
copy sees the same tree as the running container would.

After its chroot the helper must load nothing of the container's (CVE-2019-14271): no NSS lookup
(numeric uid/gid only), every module imported before, imports disabled after; it keeps only the
capabilities a copy needs, with no_new_privs, and reports errors as one clean line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tugboat.errors import InvalidArgument, NotFound, TugError

_HELPER = r'''
import os, sys, json, stat, ctypes
if sys.argv[1] in ("stat", "get"):
    import datetime
import encodings.utf_8, encodings.latin_1, encodings.ascii
if sys.argv[1] != "stat":
    import tarfile, shutil
    TarError = tarfile.TarError
else:
    tarfile, TarError = None, ()
# CVE-2019-14271: after the chroot below, every file this process loads comes from the container.
# So: no NSS lookup ever (tarfile would map uid/gid to names through glibc, which dlopen()s the
# container's libnss_*.so as root): names stay numeric, as in docker's archives; the decompressors
# tarfile imports on demand are imported now; and after the chroot no import is possible at all.
if tarfile is not None:
    tarfile.pwd = None
    tarfile.grp = None
class Replay:
    """stdin with its first bytes (read to pick the decompressor) put back in front."""
    def __init__(self, head, f):
        self.head, self.f = head, f
    def read(self, n=-1):
        if not self.head:
            return self.f.read(n)
        if n is None or n < 0:
            b, self.head = self.head + self.f.read(), b""
            return b
        b, self.head = self.head[:n], self.head[n:]
        return b + self.f.read(n - len(b)) if len(b) < n else b
stdin = sys.stdin.buffer
if sys.argv[1] == "put":  # the one decompressor "r|*" will need, imported now
    head = b""
    while len(head) < 6 and (chunk := stdin.read1(6 - len(head))):
        head += chunk
    if head.startswith(b"\x1f\x8b"):
        import zlib
    elif head.startswith(b"BZh"):
        import bz2
    elif head.startswith((b"\xfd7zXZ", b"\x5d\x00\x00\x80")):
        import lzma
    stdin = Replay(head, stdin)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
with open("/proc/sys/kernel/cap_last_cap") as f:
    cap_last = int(f.read())
mode, root, path = sys.argv[1], sys.argv[2], sys.argv[3]
opt = sys.argv[4] if len(sys.argv) > 4 else ""
mounts = json.loads(sys.argv[5]) if len(sys.argv) > 5 else []
class Fail(Exception):
    pass
def _chk(r, what):
    if r < 0:
        raise Fail(f"mounting volumes for the copy: {what}: {os.strerror(ctypes.get_errno())}")
    return r
def drop_privileges():
    # keep what a copy needs (docker's chrootarchive: CHOWN DAC_OVERRIDE FOWNER FSETID MKNOD), no
    # way back (bounding set, no_new_privs)
    keep = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 27)
    for cap in range(cap_last + 1):
        if not keep >> cap & 1 and libc.prctl(24, cap, 0, 0, 0) < 0:  # PR_CAPBSET_DROP
            raise Fail(f"dropping capability {cap}: {os.strerror(ctypes.get_errno())}")
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)  # effective, permitted, inheritable x2
    if libc.capset(hdr, data) < 0:
        raise Fail(f"capset: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(38, 1, 0, 0, 0) < 0:  # PR_SET_NO_NEW_PRIVS
        raise Fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
def enter():
    trees = []
    if mounts:  # a stopped container's volumes and binds, in a mount namespace of our own
        _chk(libc.unshare(0x00020000), "unshare")  # CLONE_NEWNS
        _chk(libc.mount(None, b"/", None, 0x4000 | 0x40000, None), "make-rprivate")  # MS_REC|MS_PRIVATE
        for src, dest, rw in mounts:
            # open_tree(OPEN_TREE_CLONE|O_CLOEXEC|AT_RECURSIVE): a detached copy of the source, attached
            # below after the chroot, so every destination is resolved inside the container's root
            fd = _chk(libc.syscall(428, -100, src.encode(), 1 | 0o2000000 | 0x8000), dest)
            trees.append((fd, dest, rw, os.path.isdir(src)))
    os.chroot(root); os.chdir("/")
    for fd, dest, rw, isdir in trees:
        if not os.path.lexists(dest):
            if isdir:
                os.makedirs(dest, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                open(dest, "a").close()
        # move_mount(fd, "", AT_FDCWD, dest, MOVE_MOUNT_F_EMPTY_PATH)
        _chk(libc.syscall(429, fd, b"", -100, dest.encode(), 0x4), dest)
        os.close(fd)
        if not rw:
            _chk(libc.mount(None, dest.encode(), None, 0x1000 | 0x20 | 0x1, None), dest)  # MS_BIND|MS_REMOUNT|MS_RDONLY
    drop_privileges()
    sys.meta_path[:] = []  # nothing of the container is ever imported
    sys.path[:] = []
def statj(p):
    st = os.lstat(p)
    link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
    m = st.st_mode & 0o777
    gm = {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFIFO: 1 << 25, stat.S_IFSOCK: 1 << 24,
          stat.S_IFBLK: 1 << 26, stat.S_IFCHR: (1 << 26) | (1 << 21)}.get(stat.S_IFMT(st.st_mode), 0)
    if st.st_mode & stat.S_ISUID: gm |= 1 << 23
    if st.st_mode & stat.S_ISGID: gm |= 1 << 22
    if st.st_mode & stat.S_ISVTX: gm |= 1 << 20
    mt = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"name": os.path.basename(p.rstrip("/")) or "/", "size": st.st_size, "mode": m | gm, "mtime": mt, "linkTarget": link}
def resolve(p, follow=True):
    p = "/" + p.lstrip("/")
    if p != "/" and p.endswith("/"):
        p = p.rstrip("/")
    d, b = os.path.split(p)
    d = os.path.realpath(d)
    full = os.path.join(d, b) if b else d
    if follow and b and os.path.islink(full) and sys.argv[3].endswith(("/", "/.")):
        full = os.path.realpath(full)
    return full
out = sys.stdout.buffer
def main():
    if mode == "stat":
        p = resolve(path)
        out.write(json.dumps(statj(p)).encode()); sys.exit(0)
    if mode == "get":
        p = resolve(path)
        st = statj(p)
        hdr = json.dumps(st).encode()
        out.write(len(hdr).to_bytes(4, "big") + hdr); out.flush()
        base = os.path.basename(p) or "."
        if path.endswith("/.") and os.path.isdir(p):
            arc = os.path.basename(p)
        else:
            arc = base
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            tf.add(p, arcname=arc, recursive=True)
        sys.exit(0)
    if mode == "export":
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for name in sorted(os.listdir("/")):
                if name in ("proc", "sys", "dev"):
                    tf.add("/" + name, arcname=name, recursive=False)
                    continue
                tf.add("/" + name, arcname=name, recursive=True)
        sys.exit(0)
    if mode == "put":
        dest = os.path.realpath("/" + path.lstrip("/"))
        if not os.path.isdir(dest):
            sys.stderr.write("extraction point is not a directory\n"); sys.exit(3)
        no_over = "n" in opt
        tf = tarfile.open(fileobj=stdin, mode="r|*")
        for m in tf:
            name = os.path.normpath(m.name.lstrip("/"))
            if name.startswith("..") or name == ".":
                if name == ".":
                    continue
                sys.stderr.write(f"refusing to extract {m.name!r}: outside the destination\n"); sys.exit(4)
            parent = os.path.realpath(os.path.join(dest, os.path.dirname(name)))
            target = os.path.join(parent, os.path.basename(name))
            if no_over and os.path.lexists(target):
                isdir = os.path.isdir(target) and not os.path.islink(target)
                if isdir != m.isdir():
                    sys.stderr.write(f"cannot overwrite {'directory' if isdir else 'non-directory'} {target!r} with {'directory' if m.isdir() else 'non-directory'}\n"); sys.exit(5)
            os.makedirs(parent, exist_ok=True)
            if m.isdir():
                if os.path.islink(target): os.unlink(target)
                os.makedirs(target, exist_ok=True)
                os.chmod(target, m.mode & 0o7777)
            elif m.issym():
                if os.path.lexists(target) and not os.path.isdir(target): os.unlink(target)
                os.symlink(m.linkname, target)
            elif m.islnk():
                src = os.path.realpath(os.path.join(dest, os.path.normpath(m.linkname.lstrip("/"))))
                if os.path.lexists(target): os.unlink(target)
                os.link(src, target)
            elif m.isfile():
                if os.path.lexists(target) and (os.path.islink(target) or not os.path.isdir(target)):
                    os.unlink(target)
                f = tf.extractfile(m)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, m.mode & 0o7777)
                with os.fdopen(fd, "wb") as w:
                    shutil.copyfileobj(f, w)
                os.chmod(target, m.mode & 0o7777)
            else:
                continue
            try:
                os.lchown(target, m.uid, m.gid)
                if not m.issym(): os.utime(target, (m.mtime, m.mtime))
            except OSError:
                pass
        sys.exit(0)
try:
    enter()
    main()
except SystemExit:
    raise
except (FileNotFoundError, NotADirectoryError):
    sys.stderr.write(f"Could not find the file {path} in container\n"); sys.exit(2)
except Fail as e:
    sys.stderr.write(f"{e}\n"); sys.exit(6)
except TarError as e:
    sys.stderr.write(f"invalid tar archive: {e}\n"); sys.exit(1)
except OSError as e:
    what = f": {e.filename}" if isinstance(e.filename, str) else ""
    sys.stderr.write(f"{e.strerror or 'error'}{what}\n"); sys.exit(1)
except BaseException as e:  # never a traceback: its source lines would be read from the container
    sys.stderr.write(f"archive helper failed: {type(e).__name__}\n"); sys.exit(1)
'''


# the helper inherits nothing of the daemon's environment; the C locale loads no message catalogs
_HELPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _root_of(engine: Any, ref: str) -> tuple[Any, str, list, Callable[[], None] | None]:
    """(container, root seen by the helper, volume mounts for it, release) for ``ref``."""
    c = engine.get(ref)
    pid = int(c.state.get("Pid") or 0)
    if c.running and pid and os.path.exists(f"/proc/{pid}/root"):
        return c, f"/proc/{pid}/root", [], None
    try:
        c, rootfs = engine.fs_acquire(ref)
    except TugError as exc:
        if isinstance(exc, NotFound):
            raise
        raise InvalidArgument(f"container {c.id} has no filesystem mounted: {exc.message}") from None
    try:
        mounts = _volume_mounts(c)
    except BaseException:
        engine.fs_release(c)
        raise
    return c, rootfs, mounts, lambda: engine.fs_release(c)


def _volume_mounts(c: Any) -> list[list[Any]]:
    """[source, destination in the container, rw] of the volumes and binds of a stopped container,
    parents before children (the helper resolves destinations after its chroot)."""
    out = []
    for m in sorted(c.data.get("Mounts") or [], key=lambda m: len(m.get("Destination") or "")):
        if m.get("Type") not in ("volume", "bind") or not m.get("Source") or not m.get("Destination"):
            continue
        if not os.path.exists(m["Source"]):
            continue
        out.append([m["Source"], "/" + m["Destination"].strip("/"), bool(m.get("RW", True))])
    return out


def _spawn(mode: str, root: str, path: str, opt: str = "", stdin: Any = subprocess.DEVNULL,
           mounts: list | None = None, release: Callable[[], None] | None = None) -> subprocess.Popen:
    args = [sys.executable, "-I", "-S", "-c", _HELPER, mode, root, path, opt]
    if mounts:
        args.append(json.dumps(mounts))
    try:
        p = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_HELPER_ENV)
    except BaseException:
        if release is not None:
            release()
        raise
    p.tug_release = release  # type: ignore[attr-defined]
    return p


def done(proc: subprocess.Popen) -> None:
    """The helper has exited: a stopped container's rootfs may be unmounted again."""
    release = getattr(proc, "tug_release", None)
    proc.tug_release = None  # type: ignore[attr-defined]
    if release is not None:
        release()


def _fail(proc: subprocess.Popen, path: str, ref: str) -> None:
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    code = proc.wait()
    done(proc)
    if code == 2:
        raise NotFound(f"Could not find the file {path} in container {ref}")
    raise InvalidArgument(err or f"archive helper failed ({code})")


def stat_path(engine: Any, ref: str, path: str) -> dict:
    _, root, mounts, release = _root_of(engine, ref)
    p = _spawn("stat", root, path, mounts=mounts, release=release)
    try:
        out = p.stdout.read()
        code = p.wait()
    finally:
        done(p)
    if code != 0:
        err = p.stderr.read().decode(errors="replace")
        if code == 2:
            raise NotFound(f"Could not find the file {path} in container {ref}")
        raise InvalidArgument(err.strip())
    return json.loads(out)


def open_archive(engine: Any, ref: str, path: str) -> tuple[dict, subprocess.Popen]:
    """The path's stat and the helper streaming its tar on stdout (call :func:`done` after)."""
    _, root, mounts, release = _root_of(engine, ref)
    p = _spawn("get", root, path, mounts=mounts, release=release)
    n = p.stdout.read(4)
    if len(n) < 4:
        _fail(p, path, ref)
    hdr = json.loads(p.stdout.read(int.from_bytes(n, "big")))
    return hdr, p


def open_export(engine: Any, ref: str) -> subprocess.Popen:
    _, root, _mounts, release = _root_of(engine, ref)  # docker export: the rootfs only
    return _spawn("export", root, "/", release=release)


def start_extract(engine: Any, ref: str, path: str, no_overwrite: bool, copy_uid: bool) -> subprocess.Popen:
    c, root, mounts, release = _root_of(engine, ref)
    try:
        if c.data["HostConfig"].get("ReadonlyRootfs"):
            raise InvalidArgument("container rootfs is marked read-only")
        p = _spawn("stat", root, path, mounts=mounts)
        out = p.stdout.read()
        if p.wait() != 0:
            if p.returncode == 2:
                raise NotFound(f"Could not find the file {path} in container {ref}")
            raise InvalidArgument(p.stderr.read().decode(errors="replace").strip())
        if not json.loads(out)["mode"] & (1 << 31):
            raise InvalidArgument("extraction point is not a directory")
    except BaseException:
        if release is not None:
            release()
        raise
    return _spawn("put", root, path, "n" if no_overwrite else "", stdin=subprocess.PIPE, mounts=mounts,
                  release=release)


def finish_extract(proc: subprocess.Popen) -> None:
    try:
        code = proc.wait()
    finally:
        done(proc)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace").strip()
        raise InvalidArgument(err or f"extraction failed ({code})")


def changes(engine: Any, ref: str) -> list[dict]:
    """``docker diff``: walk the overlay upper dir (0 modified, 1 added, 2 deleted)."""
    c = engine.get(ref)
    if engine.snapshotter is None:
        return []
    try:
        upper = engine.snapshotter.upperdir(c.id)
    except Exception:
        return []
    rootfs_lower = None
    out = []
    for dp, dirs, files in os.walk(upper):
        for name in sorted(dirs + files):
            full = os.path.join(dp, name)
            rel = "/" + os.path.relpath(full, upper)
            st = os.lstat(full)
            import stat as _stat

            if _stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append({"Path": rel, "Kind": 2})
                continue
            existed = _in_lower(engine, c, rel, rootfs_lower)
            out.append({"Path": rel, "Kind": 0 if existed else 1})
    return sorted(out, key=lambda x: x["Path"])


def _in_lower(engine: Any, c: Any, rel: str, _cache: Any) -> bool:
    try:
        lowers = engine.snapshotter.mounts(c.id)
    except Exception:
        lowers = None
    dirs: list[str] = []
    if isinstance(lowers, list):
        for m in lowers:
            for o in (m.get("options") or []) if isinstance(m, dict) else []:
                if o.startswith("lowerdir="):
                    dirs += o[9:].split(":")
    return any(os.path.lexists(d + rel) for d in dirs)
