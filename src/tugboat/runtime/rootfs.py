"""The container's filesystem: mounts, /dev, pivot_root, masked and read-only paths.

``parse_mount_options`` and ``secure_join`` are plain logic (unit tested); the ``setup_*``
functions run inside the container's mount namespace, in the container's init before exec.
"""

from __future__ import annotations

import errno
import os
import stat

from tugboat.errors import InvalidArgument
from tugboat.runtime import kernel as k
from tugboat.runtime.record import Record
from tugboat.util.fs import scoped_join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, k.MS_RDONLY),
    "rw": (True, k.MS_RDONLY),
    "suid": (True, k.MS_NOSUID),
    "nosuid": (False, k.MS_NOSUID),
    "dev": (True, k.MS_NODEV),
    "nodev": (False, k.MS_NODEV),
    "exec": (True, k.MS_NOEXEC),
    "noexec": (False, k.MS_NOEXEC),
    "sync": (False, k.MS_SYNCHRONOUS),
    "async": (True, k.MS_SYNCHRONOUS),
    "dirsync": (False, k.MS_DIRSYNC),
    "remount": (False, k.MS_REMOUNT),
    "mand": (False, k.MS_MANDLOCK),
    "nomand": (True, k.MS_MANDLOCK),
    "atime": (True, k.MS_NOATIME),
    "noatime": (False, k.MS_NOATIME),
    "diratime": (True, k.MS_NODIRATIME),
    "nodiratime": (False, k.MS_NODIRATIME),
    "bind": (False, k.MS_BIND),
    "rbind": (False, k.MS_BIND | k.MS_REC),
    "relatime": (False, k.MS_RELATIME),
    "norelatime": (True, k.MS_RELATIME),
    "strictatime": (False, k.MS_STRICTATIME),
    "nostrictatime": (True, k.MS_STRICTATIME),
    "lazytime": (False, k.MS_LAZYTIME),
    "nolazytime": (True, k.MS_LAZYTIME),
    "nosymfollow": (False, k.MS_NOSYMFOLLOW),
}
_PROPAGATION = {
    "private": k.MS_PRIVATE,
    "rprivate": k.MS_PRIVATE | k.MS_REC,
    "shared": k.MS_SHARED,
    "rshared": k.MS_SHARED | k.MS_REC,
    "slave": k.MS_SLAVE,
    "rslave": k.MS_SLAVE | k.MS_REC,
    "unbindable": k.MS_UNBINDABLE,
    "runbindable": k.MS_UNBINDABLE | k.MS_REC,
}
# recursive mount attributes (mount_setattr(2) with AT_RECURSIVE): (clear?, MOUNT_ATTR_*), runc's table
_REC_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, k.MOUNT_ATTR_RDONLY),
    "rrw": (True, k.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, k.MOUNT_ATTR_NOSUID),
    "rsuid": (True, k.MOUNT_ATTR_NOSUID),
    "rnodev": (False, k.MOUNT_ATTR_NODEV),
    "rdev": (True, k.MOUNT_ATTR_NODEV),
    "rnoexec": (False, k.MOUNT_ATTR_NOEXEC),
    "rexec": (True, k.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, k.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, k.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, k.MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, k.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, k.MOUNT_ATTR_NOATIME),
    "ratime": (True, k.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, k.MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, k.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, k.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, k.MOUNT_ATTR_NOSYMFOLLOW),
}
_ATIME_OPTS = {"rrelatime", "rnorelatime", "rnoatime", "ratime", "rstrictatime", "rnostrictatime"}
# options runc accepts and ignores for the mount(2) call
_IGNORED = {"defaults", "tmpcopyup", "idmap", "ridmap", "recursive"}


class MountOptions:
    def __init__(self) -> None:
        self.flags = 0
        self.propagation: list[int] = []
        self.data: list[str] = []
        self.rec_set = 0  # MOUNT_ATTR_* for mount_setattr(AT_RECURSIVE), after the mount
        self.rec_clr = 0

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & k.MS_BIND)


def parse_mount_options(options: list[str] | None) -> MountOptions:
    """Split OCI mount options into mount(2) flags, propagation changes and fs data."""
    out = MountOptions()
    atime = False
    for opt in options or []:
        if opt in _FLAGS:
            clear, bit = _FLAGS[opt]
            if clear:
                out.flags &= ~bit
            else:
                out.flags |= bit
        elif opt in _PROPAGATION:
            out.propagation.append(_PROPAGATION[opt])
        elif opt in _IGNORED:
            continue
        elif opt in _REC_ATTRS:
            clear, attr = _REC_ATTRS[opt]
            if clear:
                out.rec_set &= ~attr
                out.rec_clr |= attr
            else:
                out.rec_clr &= ~attr
                out.rec_set |= attr
            if opt in _ATIME_OPTS:
                atime = True
        else:
            out.data.append(opt)
    if atime:
        # the kernel wants the whole atime field cleared whenever an atime mode is given
        out.rec_clr |= k.MOUNT_ATTR__ATIME
    return out


def secure_join(root: str, unsafe: str) -> str:
    """``root``/``unsafe`` with every symlink resolved inside ``root`` (never escaping it); the
    project's one such walk (``util.fs.scoped_join``), with runc's ELOOP error."""
    try:
        return scoped_join(os.path.abspath(root), unsafe, max_hops=255)
    except InvalidArgument:
        raise OSError(errno.ELOOP, f"secure join {unsafe}: too many symlinks") from None


def _mkdir_all(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _make_mountpoint(dest: str, source_is_dir: bool) -> None:
    if os.path.lexists(dest):
        return
    if source_is_dir:
        _mkdir_all(dest)
    else:
        _mkdir_all(os.path.dirname(dest))
        with open(dest, "a"):
            pass


class RootfsContext(Record):
    rootfs: str
    config: dict[str, Any]
    cgroup_dirs: dict[str, str]  # hierarchy name -> host dir of the container
    in_userns: bool = False
    has_netns: bool = True
    dev_ro_flags: int | None = None


def finish_dev(ctx: RootfsContext) -> None:
    if ctx.dev_ro_flags is not None:
        k.mount(None, os.path.join(ctx.rootfs, "dev"), None, k.MS_REMOUNT | k.MS_RDONLY | ctx.dev_ro_flags)


def _remount_flags(path: str) -> int:
    """Flags of an existing mount that must be kept on remount (locked in a user namespace)."""
    st = os.statvfs(path)
    keep = 0
    for bit, name in ((os.ST_NOSUID, k.MS_NOSUID), (os.ST_NODEV, k.MS_NODEV), (os.ST_NOEXEC, k.MS_NOEXEC),
                      (os.ST_NOATIME, k.MS_NOATIME), (os.ST_NODIRATIME, k.MS_NODIRATIME),
                      (os.ST_RELATIME, k.MS_RELATIME)):
        if st.f_flag & bit:
            keep |= name
    return keep


def is_bind(m: dict[str, Any]) -> bool:
    opts = m.get("options") or []
    return m.get("type") == "bind" or "bind" in opts or "rbind" in opts


def mount_entry(
    ctx: RootfsContext, m: dict[str, Any], resolved_source: str | None = None, source_fd: int | None = None
) -> None:
    """Mount one OCI ``mounts`` entry under the rootfs (``resolved_source``: a bind source made
    absolute; ``source_fd``: a detached copy of it from open_tree, made before the user namespace)."""
    dest_in = m.get("destination") or ""
    if not dest_in.startswith("/"):
        dest_in = "/" + dest_in
    dest = secure_join(ctx.rootfs, dest_in)
    mtype = m.get("type") or ""
    source = m.get("source") or ""
    opts = parse_mount_options(m.get("options"))
    try:
        if opts.is_bind or mtype == "bind":
            opts.flags |= k.MS_BIND
            src = resolved_source or source
            if source_fd is not None:
                _make_mountpoint(dest, stat.S_ISDIR(os.fstat(source_fd).st_mode))
                k.move_mount_fd(source_fd, dest)
            else:
                if not os.path.exists(src):
                    raise OSError(errno.ENOENT, f"bind source {source}: no such file or directory")
                _make_mountpoint(dest, os.path.isdir(src))
                k.mount(src, dest, None, opts.flags & (k.MS_BIND | k.MS_REC))
            remount = opts.flags & ~(k.MS_BIND | k.MS_REC | k.MS_REMOUNT)
            if remount:
                k.mount(None, dest, None, k.MS_BIND | k.MS_REMOUNT | remount | _remount_flags(dest))
        elif mtype == "cgroup":
            _mount_cgroup(ctx, dest, opts)
        elif mtype in ("proc", "sysfs") and os.path.islink(os.path.join(ctx.rootfs, dest_in.lstrip("/"))):
            # a symlinked /proc or /sys could point the kernel's files anywhere in the rootfs
            raise OSError(errno.ELOOP, f"{mtype} must be mounted on ordinary directory, {dest_in} is a symlink")
        else:
            _mkdir_all(dest)
            data = ",".join(opts.data) or None
            if dest_in.rstrip("/") == "/dev" and opts.flags & k.MS_RDONLY:
                # a read-only /dev is made read-only after its device nodes exist (as runc does)
                opts.flags &= ~k.MS_RDONLY
                ctx.dev_ro_flags = opts.flags
            try:
                k.mount(source or mtype, dest, mtype, opts.flags, data)
            except OSError as e:
                if mtype == "sysfs" and e.errno in (errno.EPERM, errno.EACCES):
                    # no network namespace of our own (or rootless): bind the host's /sys
                    k.mount("/sys", dest, None, k.MS_BIND | k.MS_REC)
                    k.mount(None, dest, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | _remount_flags(dest))
                elif mtype == "mqueue" and e.errno in (errno.EPERM, errno.EACCES):
                    k.mount("/dev/mqueue", dest, None, k.MS_BIND | k.MS_REC)
                else:
                    raise
        if opts.rec_set or opts.rec_clr:
            _set_recursive_attrs(dest, opts)
        for prop in opts.propagation:
            k.mount(None, dest, None, prop)
    except OSError as e:
        reason = (e.strerror or os.strerror(e.errno or 0)) if e.errno in (errno.ELOOP, errno.ENOSYS) else (
            os.strerror(e.errno).lower() if e.errno else str(e))
        raise OSError(e.errno, f"mount {source or mtype} on {dest_in} ({mtype or 'bind'}): {reason}") from None


def _set_recursive_attrs(dest: str, opts: MountOptions) -> None:
    """rro, rnosuid, ...: mount_setattr(AT_RECURSIVE) on the mount and every mount below it."""
    try:
        k.mount_setattr(dest, opts.rec_set, opts.rec_clr)
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise OSError(e.errno, "recursive mount attributes (rro, rnosuid, ...) need mount_setattr(2), "
                          "Linux 5.12 or later") from None
        raise


def _mount_cgroup(ctx: RootfsContext, dest: str, opts: MountOptions) -> None:
    """cgroup v1: a tmpfs with one read-only bind of the container's cgroup per hierarchy."""
    _mkdir_all(dest)
    cgroup_flags = opts.flags & ~k.MS_RDONLY
    if not ctx.cgroup_dirs:
        k.mount("cgroup2", dest, "cgroup2", opts.flags)
        return
    k.mount("tmpfs", dest, "tmpfs", cgroup_flags, "mode=755")
    for name, hostdir in ctx.cgroup_dirs.items():
        if not name or not os.path.isdir(hostdir):
            continue
        sub = os.path.join(dest, name.replace("name=", ""))
        _mkdir_all(sub)
        k.mount(hostdir, sub, None, k.MS_BIND | k.MS_REC)
        # read-only only when the mount asks for it (runc: a cgroup mount without "ro" is writable)
        ro = opts.flags & k.MS_RDONLY
        k.mount(None, sub, None, k.MS_BIND | k.MS_REMOUNT | ro | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)
    if opts.flags & k.MS_RDONLY:
        k.mount(None, dest, None, k.MS_REMOUNT | k.MS_RDONLY | cgroup_flags, "mode=755")


_DEFAULT_DEVICES = [
    # name, type, major, minor, mode
    ("null", "c", 1, 3, 0o666),
    ("zero", "c", 1, 5, 0o666),
    ("full", "c", 1, 7, 0o666),
    ("random", "c", 1, 8, 0o666),
    ("urandom", "c", 1, 9, 0o666),
    ("tty", "c", 5, 0, 0o666),
]


def _create_device(
    rootfs: str, path: str, kind: str, major: int, minor: int, mode: int, uid: int, gid: int, bind: bool
) -> None:
    dest = secure_join(rootfs, path)
    _mkdir_all(os.path.dirname(dest))
    if bind:
        _make_mountpoint(dest, False)
        k.mount(path, dest, None, k.MS_BIND)
        return
    if os.path.lexists(dest):
        os.unlink(dest)
    ftype = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}.get(kind)
    if ftype is None:
        raise OSError(errno.EINVAL, f"device {path}: unknown type {kind!r}")
    old = os.umask(0)
    try:
        os.mknod(dest, mode | ftype, os.makedev(major, minor))
    except PermissionError:
        # the devices cgroup forbids creating it: bind the host's node instead (as runc does)
        if not os.path.exists(path):
            raise
        with open(dest, "a"):
            pass
        k.mount(path, dest, None, k.MS_BIND)
        return
    finally:
        os.umask(old)
    os.chown(dest, uid, gid)


def setup_dev(ctx: RootfsContext) -> None:
    """Default device nodes, config devices, and the /dev symlinks runc makes."""
    dev_is_tmpfs = any(
        (m.get("destination") or "").rstrip("/") == "/dev" and m.get("type") != "bind"
        and "bind" not in (m.get("options") or []) and "rbind" not in (m.get("options") or [])
        for m in ctx.config.get("mounts") or []
    )
    if dev_is_tmpfs:
        for name, kind, major, minor, mode in _DEFAULT_DEVICES:
            _create_device(ctx.rootfs, f"/dev/{name}", kind, major, minor, mode, 0, 0, ctx.in_userns)
    for d in (ctx.config.get("linux") or {}).get("devices") or []:
        mode = d.get("fileMode")
        _create_device(
            ctx.rootfs, d["path"], d.get("type", "c"), int(d.get("major", 0)), int(d.get("minor", 0)),
            0o666 if mode is None else int(mode), int(d.get("uid") or 0), int(d.get("gid") or 0), ctx.in_userns,
        )
    if dev_is_tmpfs:
        links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
                 ("/proc/self/fd/2", "stderr")]
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "core"))
        for target, name in links:
            p = os.path.join(ctx.rootfs, "dev", name)
            if not os.path.lexists(p):
                os.symlink(target, p)
        ptmx = os.path.join(ctx.rootfs, "dev", "ptmx")
        if os.path.isdir(os.path.join(ctx.rootfs, "dev", "pts")):
            if os.path.lexists(ptmx):
                os.unlink(ptmx)
            os.symlink("pts/ptmx", ptmx)


def prepare_root(ctx: RootfsContext) -> None:
    """Before mounts: stop propagation to the host, make the rootfs a mount point."""
    linux = ctx.config.get("linux") or {}
    prop = _PROPAGATION.get(linux.get("rootfsPropagation") or "", k.MS_SLAVE | k.MS_REC)
    # the host side gets at most slave propagation; shared is applied after pivot
    k.mount(None, "/", None, k.MS_SLAVE | k.MS_REC if prop & k.MS_SHARED else prop)
    k.mount(ctx.rootfs, ctx.rootfs, None, k.MS_BIND | k.MS_REC)


def pivot_root(rootfs: str, no_pivot: bool = False) -> None:
    """Make rootfs the root: pivot_root(".", ".") then detach the old root; or MS_MOVE + chroot."""
    if not no_pivot:
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
        new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY)
        try:
            os.fchdir(new)
            try:
                k.pivot_root(".", ".")
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                no_pivot = True  # e.g. the root is on ramfs/initramfs
            else:
                os.fchdir(old)
                k.mount(None, ".", None, k.MS_SLAVE | k.MS_REC)
                k.umount2(".", k.MNT_DETACH)
                os.chdir("/")
                return
        finally:
            os.close(old)
            os.close(new)
    _hide_host_proc_sys(rootfs)
    os.chdir(rootfs)
    k.mount(rootfs, "/", None, k.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _hide_host_proc_sys(rootfs: str) -> None:
    """Without pivot_root the host's mounts stay in the container's mount namespace (under the
    moved root). A full procfs or sysfs among them would let the container mount a fresh,
    unmasked proc/sysfs in a new user namespace (the kernel checks every mount of the namespace,
    mnt_too_revealing): detach them, or cover them with a tmpfs, as runc's msMoveRoot does."""
    prefix = rootfs.rstrip("/") + "/"
    found: list[str] = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            sep = fields.index(b"-")
            root, mountpoint, fstype = fields[3], fields[4], fields[sep + 1]
            if root != b"/" or fstype not in (b"proc", b"sysfs"):
                continue
            point = _unescape_mountinfo(mountpoint.decode())
            if point == rootfs or point.startswith(prefix):
                continue
            found.append(point)
    for point in sorted(found, key=len, reverse=True):
        try:
            k.mount(None, point, None, k.MS_SLAVE | k.MS_REC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue  # a parent is already gone
            raise
        try:
            k.umount2(point, k.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            k.mount("tmpfs", point, "tmpfs", 0, None)


def _unescape_mountinfo(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mask_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                k.mount("tmpfs", p, "tmpfs", k.MS_RDONLY, None)
            else:
                k.mount("/dev/null", p, None, k.MS_BIND)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def readonly_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            k.mount(p, p, None, k.MS_BIND | k.MS_REC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue
            raise
        k.mount(None, p, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_REC | _remount_flags(p))


def finish_root(config: dict[str, Any]) -> None:
    """After pivot: read-only root and the requested root propagation."""
    root = config.get("root") or {}
    if root.get("readonly"):
        k.mount(None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | _remount_flags("/"))
    prop = (config.get("linux") or {}).get("rootfsPropagation")
    if prop in _PROPAGATION:
        k.mount(None, "/", None, _PROPAGATION[prop])
