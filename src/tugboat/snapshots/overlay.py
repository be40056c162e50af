"""The overlayfs snapshotter: layers unpacked once per chain ID, shared; writable snapshots on top.

On-disk layout under ``<root>/snapshots``::

    layers/<chain-id hex>/fs          one unpacked layer (only that layer's changes + whiteouts)
    layers/<chain-id hex>/meta.json   {"chain_id", "diff_id", "size", "unpacked_size", "entries"}
    active/<key>/upper, work          a writable snapshot (container rootfs, build step)
    active/<key>/meta.json            {"key", "chain_ids", "readonly", "image"}
    tmp/                              layers being unpacked (renamed into layers/ when complete)
    locks/<chain-id hex>.lock         flock held while one process unpacks a layer
    empty/                            an empty lower dir for snapshots without an image

A layer directory exists under ``layers/`` only once it is complete (atomic rename), so a crash
mid-unpack leaves only ``tmp/`` garbage, which ``cleanup()`` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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
            self.unpack_layer(cid, diff_id, desc["digest"], desc["mediaType"])
            out.append(self.layer_fs(cid))
        out.reverse()
        return out

    def remove_layer(self, chain_id: str) -> None:
        d = self.layer_dir(chain_id)
        if not os.path.exists(d):
            return
        os.makedirs(self.tmp_dir, exist_ok=True)
        dead = _mkdtemp(prefix="rm-", dir=self.tmp_dir)
        os.rename(d, os.path.join(dead, "x"))
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

    def prepare(self, key: str, image: Any | None = None, readonly: bool = False) -> RootfsSpec:
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
        if not lowers or readonly:
            lowers.append(self.empty_dir)  # overlay needs a lower; read-only mounts need two
        os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = _mkdtemp(prefix=f"{os.getpid()}-", dir=self.tmp_dir)
        os.mkdir(os.path.join(tmp, "upper"), 0o755)
        os.mkdir(os.path.join(tmp, "work"), 0o700)
        _write_json_atomic(
            os.path.join(tmp, "meta.json"),
            {"key": key, "chain_ids": chain_ids, "readonly": readonly,
             "image": getattr(image, "id", None), "lowerdirs": lowers},
        )
        try:
            os.rename(tmp, d)
        except OSError:
            _rmtree(tmp)
            raise Conflict(f"snapshot {key} already exists") from None
        return self._spec(key)

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
