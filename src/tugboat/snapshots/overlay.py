"""The overlayfs snapshotter: layers unpacked once per chain ID, shared; writable snapshots on top.

On-disk layout under ``<root>/snapshots``::

    layers/<chain-id hex>/fs          one unpacked layer (only that layer's changes + whiteouts)
    layers/<chain-id hex>/meta.json   {"chain_id", "diff_id", "size", "unpacked_size", "entries"}
    active/<key>/upper, work          a writable snapshot (container rootfs, build step)
    active/<key>/meta.json            {"key", "chain_ids", "readonly", "image"}
    init/<hash>/fs                    an init layer: empty mount points (/etc/hosts, bind targets)
                                      the image lacks, shared by the containers of one image and
                                      one set of mount points (topmost lower dir of their snapshots)
    tmp/                              layers being unpacked (renamed into layers/ when complete),
                                      snapshots being prepared (``<pid>-<key>``) or removed
    locks/<chain-id hex>.lock         flock held while one process unpacks a layer
    empty/                            an empty lower dir for snapshots without an image

A layer directory exists under ``layers/`` only once it is complete (atomic rename), so a crash
mid-unpack leaves only ``tmp/`` garbage, which ``cleanup()`` removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tugboat.content.store import ContentStore
from tugboat.errors import Conflict, InvalidArgument, NotFound
from tugboat.oci.image import OCI_LAYER_GZIP, LayerBlob, layer_compression
from tugboat.util.fs import write_atomic
from tugboat.util.proc import pid_alive

OVERLAY_OPTIONS_MAX = 4000  # the kernel copies mount data into one page


def _mkdtemp(prefix: str, dir: str) -> str:
    import tempfile  # lazily: tempfile (random, weakref) is not needed on a cached `tug build`

    return tempfile.mkdtemp(prefix=prefix, dir=dir)


def _write_json_atomic(path: str, obj: Any) -> None:
    write_atomic(path, msgspec.json.encode(obj))


def _write_new(path: str, data: bytes) -> None:
    """Write a new file inside a directory not yet renamed into place (fsynced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _abs_norm(path: str) -> str:
    """``path`` normalised as an absolute path (one leading slash, no ``.``/``..``)."""
    return os.path.normpath("/" + path.lstrip("/"))


_WHITEOUT = "whiteout"


def _lower_kind(lowers: list[str], rel: str) -> tuple[str | None, os.stat_result | None, list[str]]:
    """What the overlay of ``lowers`` (top first) shows at ``rel`` (relative, no symlinks
    followed), given the layers through which its parent directory is visible: the kind
    ("dir", "file", "other" for symlinks and devices, None when absent), the stat of the
    topmost entry, and the layers through which ``rel`` (as a directory) is visible."""
    kind: str | None = None
    top: os.stat_result | None = None
    through: list[str] = []
    for layer in lowers:
        try:
            st = os.lstat(os.path.join(layer, rel))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlay whiteout hides the rest
            break
        if kind is None:
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            top = st
        if kind != "dir" or not stat.S_ISDIR(st.st_mode):
            break
        through.append(layer)
        try:
            if os.getxattr(os.path.join(layer, rel), "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                break
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                return "other", top, []  # cannot tell: leave this path alone
    return kind, top, through


def _init_plan(lowers: list[str], want: list[tuple[str, bool]]) -> list[tuple[str, str, os.stat_result | None]]:
    """Entries of an init layer, parents first: (relative path, "dir"/"file", the stat of the
    image's directory it stands for, or None for a new one)."""
    plan: dict[str, tuple[str, os.stat_result | None]] = {}
    for path, is_dir in want:
        parts = path.strip("/").split("/")
        layers = lowers
        entries: list[tuple[str, str, os.stat_result | None]] = []
        ok = True
        for i in range(len(parts)):
            rel = "/".join(parts[: i + 1])
            last = i == len(parts) - 1
            if layers:
                kind, st, layers = _lower_kind(layers, rel)
            else:
                kind, st = None, None
            if kind is None:
                entries.append((rel, "dir" if (not last or is_dir) else "file", None))
                layers = []
            elif last:
                ok = False  # the image has it: nothing to add
            elif kind == "dir":
                entries.append((rel, "dir", st))
            else:
                ok = False  # a symlink or file on the way: the runtime resolves it as before
                break
        if ok and entries and entries[-1][2] is None:
            for rel, kind, st in entries:
                prev = plan.get(rel)
                if prev is not None and prev[0] != kind:
                    return []  # a file and a directory at one path: give up on the init layer
                plan.setdefault(rel, (kind, st))
    return [(rel, kind, st) for rel, (kind, st) in sorted(plan.items(), key=lambda kv: kv[0].count("/"))]


def _rmtree(path: str) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=False, onerror=_force_rm)


def _force_rm(func: Any, path: str, exc: Any) -> None:
    # overlay work dirs contain 000 dirs; make them writable and retry once
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


@dataclass
class RootfsSpec:
    """What a runtime needs to assemble a container's root filesystem."""

    key: str
    lowerdirs: list[str]  # top first, as overlay's lowerdir= wants them
    upperdir: str | None
    workdir: str | None
    readonly: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def options(self, check: bool = True) -> str:
        """The overlay mount data. Beyond one page (~40 layers with long paths) ``mount()``
        still works (it passes lower dirs one by one through the new mount API), but a caller
        that needs this string gets ``InvalidArgument``."""
        opts = "lowerdir=" + ":".join(self.lowerdirs)
        if self.upperdir and self.workdir and not self.readonly:
            opts += f",upperdir={self.upperdir},workdir={self.workdir}"
        if check and len(opts) > OVERLAY_OPTIONS_MAX:
            raise InvalidArgument(f"too many layers for one overlay mount ({len(self.lowerdirs)} lower dirs)")
        return opts

    def mount(self, target: str) -> None:
        from tugboat.snapshots.mount import mount, mount_overlay_fsconfig

        os.makedirs(target, exist_ok=True)
        opts = self.options(check=False)
        if len(opts) <= OVERLAY_OPTIONS_MAX:
            mount("overlay", target, "overlay", 0, opts)
        else:
            mount_overlay_fsconfig(target, self.lowerdirs, None if self.readonly else self.upperdir,
                                   None if self.readonly else self.workdir)

    def mounts(self) -> list[dict[str, Any]]:
        """OCI runtime-spec mount entries for this rootfs."""
        return [{"type": "overlay", "source": "overlay", "destination": "/", "options": self.options().split(",")}]


class Snapshotter:
    """Overlay snapshots under ``root_dir`` (``<data root>/snapshots``)."""

    def __init__(self, root_dir: str, content: ContentStore | None = None) -> None:
        self.root = os.path.abspath(root_dir)
        self.content = content or ContentStore(os.path.join(os.path.dirname(self.root), "content"))
        self.layers_dir = os.path.join(self.root, "layers")
        self.active_dir = os.path.join(self.root, "active")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.locks_dir = os.path.join(self.root, "locks")
        self.empty_dir = os.path.join(self.root, "empty")
        self._init_cache: dict[str, str] = {}  # init layer key -> its fs dir ("" for none needed)

    # ---- layers -------------------------------------------------------------------------

    def layer_dir(self, chain_id: str) -> str:
        return os.path.join(self.layers_dir, chain_id.split(":", 1)[-1])

    def layer_fs(self, chain_id: str) -> str:
        return os.path.join(self.layer_dir(chain_id), "fs")

    def has_layer(self, chain_id: str) -> bool:
        return os.path.exists(os.path.join(self.layer_dir(chain_id), "meta.json"))

    def layer_meta(self, chain_id: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.layer_dir(chain_id), "meta.json"), "rb") as f:
                return msgspec.json.decode(f.read())
        except FileNotFoundError:
            raise NotFound(f"layer {chain_id} is not unpacked") from None

    @contextlib.contextmanager
    def _lock(self, chain_id: str) -> Iterator[None]:
        os.makedirs(self.locks_dir, exist_ok=True)
        fd = os.open(os.path.join(self.locks_dir, chain_id.split(":", 1)[-1] + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unpack_layer(self, chain_id: str, diff_id: str, blob_digest: str, media_type: str) -> dict[str, Any]:
        """Unpack one layer blob (if not yet unpacked) as ``chain_id``; returns its meta."""
        if self.has_layer(chain_id):
            return self.layer_meta(chain_id)
        compression = layer_compression(media_type)
        with self._lock(chain_id):
            if self.has_layer(chain_id):
                return self.layer_meta(chain_id)
            os.makedirs(self.tmp_dir, exist_ok=True)
            os.makedirs(self.layers_dir, exist_ok=True)
            tmp = _mkdtemp(prefix=f"{os.getpid()}-", dir=self.tmp_dir)
            from tugboat.snapshots.layer import apply_layer

            try:
                res = apply_layer(
                    self.content.path(blob_digest), os.path.join(tmp, "fs"),
                    compression=compression, expected_diff_id=diff_id,
                )
                meta = {
                    "chain_id": chain_id,
                    "diff_id": diff_id,
                    "blob": blob_digest,
                    "size": res.size,
                    "unpacked_size": res.unpacked_size,
                    "entries": res.entries,
                }
                _write_json_atomic(os.path.join(tmp, "meta.json"), meta)
                os.rename(tmp, self.layer_dir(chain_id))
                return meta
            except BaseException:
                _rmtree(tmp)
                raise

    def ensure_layers(self, image: Any) -> list[str]:
        """Lower dirs of ``image`` (top first), unpacking any layer not yet unpacked."""
        descs = image.manifest.get("layers", [])
        diff_ids = list(image.layers)
        chain = list(image.chain_ids)
        if len(descs) != len(diff_ids):
            raise InvalidArgument(
                f"image {image.id}: manifest has {len(descs)} layers but config has {len(diff_ids)} diff IDs"
            )
        out = []
        for desc, diff_id, cid in zip(descs, diff_ids, chain, strict=True):
            if not self.has_layer(cid):  # (its meta is not needed here: one read less per layer)
                self.unpack_layer(cid, diff_id, desc["digest"], desc["mediaType"])
            out.append(self.layer_fs(cid))
        out.reverse()
        return out

    def remove_layer(self, chain_id: str) -> None:
        d = self.layer_dir(chain_id)
        if not os.path.exists(d):
            return
        self._remove_init_layers(self.layer_fs(chain_id))
        os.makedirs(self.tmp_dir, exist_ok=True)
        dead = _mkdtemp(prefix="rm-", dir=self.tmp_dir)
        os.rename(d, os.path.join(dead, "x"))
        _rmtree(dead)

    def _remove_init_layers(self, layer_fs: str) -> None:
        """Delete the init layers made over ``layer_fs`` that no snapshot uses (its image is gone)."""
        init_root = os.path.join(self.root, "init")
        try:
            names = os.listdir(init_root)
        except FileNotFoundError:
            return
        doomed = []
        for name in names:
            try:
                with open(os.path.join(init_root, name, "lowers.json"), "rb") as f:
                    lowers = msgspec.json.decode(f.read())
            except (OSError, msgspec.DecodeError):
                continue
            if layer_fs in lowers:
                doomed.append(name)
        if not doomed:
            return
        used: set[str] = set()
        for key in self.list():
            with contextlib.suppress(NotFound, OSError, msgspec.DecodeError):
                used.update(self.info(key).get("lowerdirs") or [])
        os.makedirs(self.tmp_dir, exist_ok=True)
        for name in doomed:
            if os.path.join(init_root, name, "fs") in used:
                continue
            self._init_cache.pop(name, None)
            dead = _mkdtemp(prefix="rm-", dir=self.tmp_dir)
            with contextlib.suppress(FileNotFoundError):
                os.rename(os.path.join(init_root, name), os.path.join(dead, "x"))
            _rmtree(dead)

    def list_layers(self) -> list[str]:
        try:
            names = os.listdir(self.layers_dir)
        except FileNotFoundError:
            return []
        return sorted("sha256:" + n for n in names)

    def layers_in_use(self) -> set[str]:
        used: set[str] = set()
        for key in self.list():
            with contextlib.suppress(NotFound):
                used.update(self.info(key).get("chain_ids", []))
        return used

    # ---- active snapshots -----------------------------------------------------------------

    def _active(self, key: str) -> str:
        if not key or "/" in key or key in (".", ".."):
            raise InvalidArgument(f"invalid snapshot key {key!r}")
        return os.path.join(self.active_dir, key)

    def prepare(self, key: str, image: Any | None = None, readonly: bool = False,
                mountpoints: list[tuple[str, bool]] | None = None) -> RootfsSpec:
        """A writable (or read-only) snapshot ``key`` over ``image``'s layers. ``mountpoints``:
        (absolute path, is a directory) of the mounts a container will get; those missing from
        the image come from a shared init layer (see :meth:`init_layer`) instead of being created
        in each container's upper dir (an inode each, and overlay copy-ups of their parents)."""
        d = self._active(key)
        if os.path.exists(d):
            # the same key over the same image again (a restart re-mounting its rootfs): reuse it
            with contextlib.suppress(NotFound):
                info = self.info(key)
                if info.get("image") == getattr(image, "id", None) and bool(info.get("readonly")) == readonly:
                    return self._spec(key)
            raise Conflict(f"snapshot {key} already exists")
        lowers = self.ensure_layers(image) if image is not None else []
        chain_ids = list(image.chain_ids) if image is not None else []
        os.makedirs(self.empty_dir, exist_ok=True)
        os.makedirs(self.active_dir, exist_ok=True)
        if mountpoints and lowers and not readonly:
            init = self.init_layer(lowers, mountpoints)
            if init is not None:
                lowers.insert(0, init)
        if not lowers or readonly:
            lowers.append(self.empty_dir)  # overlay needs a lower; read-only mounts need two
        os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = self._new_tmp(key)
        try:
            os.mkdir(os.path.join(tmp, "upper"), 0o755)
            os.mkdir(os.path.join(tmp, "work"), 0o700)
            # a fresh directory, renamed into place below: the rename is the commit, so the file
            # is written in place (no temporary file and rename of its own), fsynced first
            _write_new(os.path.join(tmp, "meta.json"), msgspec.json.encode(
                {"key": key, "chain_ids": chain_ids, "readonly": readonly,
                 "image": getattr(image, "id", None), "lowerdirs": lowers}))
            os.rename(tmp, d)
        except OSError:
            _rmtree(tmp)
            if os.path.exists(d):
                raise Conflict(f"snapshot {key} already exists") from None
            raise
        return self._spec(key)

    def _new_tmp(self, key: str) -> str:
        """A new directory in ``tmp/`` named ``<pid>-<key>`` (``cleanup()`` reads the pid)."""
        tmp = os.path.join(self.tmp_dir, f"{os.getpid()}-{key}")
        try:
            os.mkdir(tmp, 0o700)
        except FileExistsError:  # a crash's leftover under a reused pid, or a racing prepare
            return _mkdtemp(prefix=f"{os.getpid()}-", dir=self.tmp_dir)
        return tmp

    # ---- init layers ------------------------------------------------------------------------

    def init_layer(self, lowers: list[str], mountpoints: list[tuple[str, bool]]) -> str | None:
        """A read-only lower dir holding the ``mountpoints`` (path, is a directory) that the
        image (``lowers``, top first) lacks, with their missing parents; None when none is
        missing. As Docker's init layer, but one per (image, set of mount points), shared by
        every container of that shape: a pod's containers and their replicas get their
        /etc/hosts, /etc/resolv.conf and volume mount points without creating them in each
        upper dir. A mount point under a path the image has as a symlink or a non-directory is
        left out (the runtime resolves it in the container as before)."""
        import hashlib

        want = sorted({(n, bool(is_dir)) for p, is_dir in mountpoints
                       if p.startswith("/") and (n := _abs_norm(p)) != "/"})
        if not want:
            return None
        key = hashlib.sha256(msgspec.json.encode([lowers, want])).hexdigest()
        d = os.path.join(self.root, "init", key)
        fs = os.path.join(d, "fs")
        cached = self._init_cache.get(key)
        if cached == "" or (cached and os.path.isdir(cached)):
            return cached or None
        if os.path.isdir(fs):
            self._init_cache[key] = fs
            return fs
        plan = _init_plan(lowers, want)
        if not plan:
            self._init_cache[key] = ""
            return None
        os.makedirs(os.path.join(self.root, "init"), exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = _mkdtemp(prefix=f"{os.getpid()}-init-", dir=self.tmp_dir)
        try:
            tfs = os.path.join(tmp, "fs")
            os.mkdir(tfs, 0o755)
            # which layers it serves: remove_layer() deletes it with them
            _write_new(os.path.join(tmp, "lowers.json"), msgspec.json.encode(lowers))
            for rel, kind, st in plan:
                path = os.path.join(tfs, rel)
                if kind == "file":
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
                    os.chmod(path, 0o644)
                else:
                    os.mkdir(path, 0o755)
                    os.chmod(path, 0o755)  # whatever the umask
                if st is not None:  # a directory the image has: the same owner, mode and times
                    os.lchown(path, st.st_uid, st.st_gid)
                    os.chmod(path, st.st_mode & 0o7777)
            for rel, _kind, st in reversed(plan):
                if st is not None:
                    os.utime(os.path.join(tfs, rel), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            try:
                os.rename(tmp, d)
            except OSError:  # another prepare made it first
                _rmtree(tmp)
                if not os.path.isdir(fs):
                    raise
        except BaseException:
            _rmtree(tmp)
            raise
        self._init_cache[key] = fs
        return fs

    def _spec(self, key: str) -> RootfsSpec:
        d = self._active(key)
        info = self.info(key)
        return RootfsSpec(
            key=key, lowerdirs=list(info["lowerdirs"]),
            upperdir=None if info["readonly"] else os.path.join(d, "upper"),
            workdir=None if info["readonly"] else os.path.join(d, "work"),
            readonly=bool(info["readonly"]),
        )

    def info(self, key: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self._active(key), "meta.json"), "rb") as f:
                return msgspec.json.decode(f.read())
        except FileNotFoundError:
            raise NotFound(f"snapshot {key} does not exist") from None

    def spec(self, key: str) -> RootfsSpec:
        return self._spec(key)

    def upperdir(self, key: str) -> str:
        self.info(key)
        return os.path.join(self._active(key), "upper")

    def mounts(self, key: str) -> list[dict[str, Any]]:
        return self._spec(key).mounts()

    def diff(self, key: str, media_type: str = OCI_LAYER_GZIP) -> LayerBlob:
        """The upper dir's changes as a gzip layer in the content store."""
        from tugboat.snapshots.layer import HashingGzipWriter, diff_dirs

        upper = self.upperdir(key)
        with self.content.writer() as w:
            gz = HashingGzipWriter(w)
            diff_dirs(upper, gz)  # type: ignore[arg-type]
            gz.close()
            digest = w.commit()
            size = w.size
        return LayerBlob(digest, media_type, gz.diff_id, size)

    def remove(self, key: str) -> None:
        d = self._active(key)
        if not os.path.exists(d):
            raise NotFound(f"snapshot {key} does not exist")
        os.makedirs(self.tmp_dir, exist_ok=True)
        # out of active/ at once (atomic), then deleted; a crash leaves it to cleanup()
        dead = os.path.join(self.tmp_dir, f"rm-{key}-{os.getpid()}")
        try:
            os.rename(d, dead)
        except OSError:
            if not os.path.lexists(d):
                raise NotFound(f"snapshot {key} does not exist") from None
            dead = _mkdtemp(prefix="rm-", dir=self.tmp_dir)
            os.rename(d, os.path.join(dead, "x"))
        _rmtree(dead)

    def list(self) -> list[str]:
        try:
            return sorted(os.listdir(self.active_dir))
        except FileNotFoundError:
            return []

    def leftovers(self) -> list[str]:
        try:
            return [os.path.join(self.tmp_dir, n) for n in os.listdir(self.tmp_dir)]
        except FileNotFoundError:
            return []

    def cleanup(self) -> int:
        """Remove unpacks and removals that a crash left in ``tmp/`` (their process is gone)."""
        n = 0
        for p in self.leftovers():
            pid = os.path.basename(p).split("-", 1)[0]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            _rmtree(p)
            n += 1
        return n

    def usage(self) -> dict[str, int]:
        total = 0
        for cid in self.list_layers():
            with contextlib.suppress(NotFound):
                total += int(self.layer_meta(cid).get("unpacked_size", 0))
        return {"layers": len(self.list_layers()), "unpacked_size": total}
