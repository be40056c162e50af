"""ImageService: the facade over content, snapshots and image records that every area uses.

The engine, the builder, the registry client and the CLI call this. ``Image.repo_tags`` and
``Image.repo_digests`` are in docker's familiar form (``busybox:latest``); the records store fully
qualified names. ``Image.size`` is the unpacked size (bytes of file content of all layers), as
``docker images`` shows; before the layers are unpacked it is the sum of the compressed blobs.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from tugboat.content.store import ContentStore
from tugboat.errors import Conflict, DataCorruption, InvalidArgument, NotFound
from tugboat.images.store import ImageDB
from tugboat.oci import image as oci
from tugboat.oci.digest import chain_ids as compute_chain_ids
from tugboat.oci.digest import validate_digest
from tugboat.oci.image import LayerBlob
from tugboat.oci.reference import Reference, parse_reference
from tugboat.snapshots.overlay import Snapshotter
from tugboat.util.proc import pid_alive

__all__ = ["Image", "ImageService", "LayerBlob", "now_rfc3339"]

_HEX_PREFIX_RE = re.compile(r"^(sha256:)?[a-f0-9]{1,64}$")


def rfc3339_to_unix(s: str) -> int:
    """Seconds since the epoch of an RFC 3339 time (``Z`` or ``±hh:mm``); 0 when unparsable."""
    import datetime

    if not s:
        return 0
    s = s.strip().replace("z", "Z")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?([+-]\d\d:\d\d)?$", s)
    if not m:
        return 0
    try:
        dt = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) or "+00:00"))
    except ValueError:
        return 0
    return int(dt.timestamp())


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


@dataclass
class Image:
    id: str
    manifest_digest: str
    repo_tags: list[str]
    repo_digests: list[str]
    config: dict[str, Any]
    manifest: dict[str, Any]
    size: int
    created: str
    layers: list[str]
    chain_ids: list[str]
    media_type: str = oci.OCI_MANIFEST
    added: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    @property
    def compressed_size(self) -> int:
        return sum(int(d.get("size", 0)) for d in self.manifest.get("layers", []))

    @property
    def created_unix(self) -> int:
        return rfc3339_to_unix(self.created)

    def summary(self, containers: int = -1) -> dict[str, Any]:
        """docker's ``GET /images/json`` entry."""
        labels = (self.config.get("config") or {}).get("Labels") or {}
        return {
            "Id": self.id, "ParentId": "", "RepoTags": list(self.repo_tags),
            "RepoDigests": list(self.repo_digests), "Created": self.created_unix, "Size": self.size,
            "SharedSize": -1, "VirtualSize": self.size, "Labels": labels, "Containers": containers,
            "Descriptor": {"mediaType": self.media_type, "digest": self.manifest_digest,
                           "size": self.extra.get("manifest_size", 0)},
        }

    def inspect(self) -> dict[str, Any]:
        """docker's ``GET /images/{name}/json`` shape."""
        cfg = self.config
        return {
            "Id": self.id,
            "RepoTags": list(self.repo_tags),
            "RepoDigests": list(self.repo_digests),
            "Parent": "",
            "Comment": (cfg.get("history") or [{}])[-1].get("comment", "") if cfg.get("history") else "",
            "Created": self.created,
            "DockerVersion": "",
            "Author": cfg.get("author", ""),
            "Config": _docker_container_config(cfg.get("config") or {}),
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant"),
            "Os": cfg.get("os", ""),
            "Size": self.size,
            "GraphDriver": {"Name": "overlay2", "Data": None},
            "RootFS": {"Type": "layers", "Layers": list(self.layers)},
            "Metadata": {"LastTagTime": self.added or "0001-01-01T00:00:00Z"},
            "Descriptor": {"mediaType": self.media_type, "digest": self.manifest_digest,
                           "size": self.extra.get("manifest_size", 0)},
        }


def _docker_container_config(c: dict[str, Any]) -> dict[str, Any]:
    out = {
        "Hostname": "", "Domainname": "", "User": c.get("User", ""), "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "ExposedPorts": c.get("ExposedPorts"),
        "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": c.get("Env"),
        "Cmd": c.get("Cmd"), "Image": "", "Volumes": c.get("Volumes"),
        "WorkingDir": c.get("WorkingDir", ""), "Entrypoint": c.get("Entrypoint"),
        "OnBuild": c.get("OnBuild"), "Labels": c.get("Labels"),
    }
    for k in ("StopSignal", "Healthcheck", "Shell", "ArgsEscaped"):
        if k in c:
            out[k] = c[k]
    return out


def _parse_tag_ref(s: str) -> Reference:
    ref = parse_reference(s)
    if ref.digest is not None:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    return ref


class ImageService:
    """Images under a data root: ``content/``, ``snapshots/``, ``images/``."""

    def __init__(self, root: str, *, unpack: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshots = Snapshotter(os.path.join(self.root, "snapshots"), self.content)
        self.db = ImageDB(os.path.join(self.root, "images"))
        self.tmp_dir = os.path.join(self.root, "images", "tmp")
        self.unpack = unpack

    @property
    def snapshotter(self) -> Snapshotter:
        return self.snapshots

    # ---- reading -------------------------------------------------------------------------

    def _image(self, image_id: str, data: dict[str, Any]) -> Image:
        rec = data["images"][image_id]
        manifest_bytes = self.content.read(rec["manifest"])
        manifest = msgspec.json.decode(manifest_bytes)
        config = msgspec.json.decode(self.content.read(image_id))
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        tags = sorted(_familiar(t) for t, i in data["tags"].items() if i == image_id)
        digests = sorted(_familiar(d) for d in rec.get("repo_digests", []))
        return Image(
            id=image_id,
            manifest_digest=rec["manifest"],
            repo_tags=tags,
            repo_digests=digests,
            config=config,
            manifest=manifest,
            size=int(rec.get("size") or sum(int(d.get("size", 0)) for d in manifest.get("layers", []))),
            created=config.get("created") or "",
            layers=diff_ids,
            chain_ids=compute_chain_ids(diff_ids),
            media_type=manifest.get("mediaType") or oci.OCI_MANIFEST,
            added=rec.get("added", ""),
            extra={"manifest_size": len(manifest_bytes), "index": rec.get("index")},
        )

    def list(self) -> list[Image]:
        data = self.db.read()
        out = []
        for image_id in data["images"]:
            with contextlib.suppress(NotFound):
                out.append(self._image(image_id, data))
        out.sort(key=lambda i: (i.created, i.id), reverse=True)
        return out

    def _resolve_id(self, s: str, data: dict[str, Any]) -> str | None:
        images = data["images"]
        tags = data["tags"]
        if s.startswith("sha256:") and len(s) == 71 and s in images:
            return s
        ref: Reference | None = None
        with contextlib.suppress(InvalidArgument):
            ref = parse_reference(s)
        if ref is not None:
            if ref.digest is not None:
                for image_id, rec in images.items():
                    if f"{ref.name}@{ref.digest}" in rec.get("repo_digests", []):
                        return image_id
                for image_id, rec in images.items():
                    if ref.digest in (rec.get("manifest"), rec.get("index")):
                        return image_id
                return None
            if ref.tagged in tags:
                return tags[ref.tagged]
        if _HEX_PREFIX_RE.match(s):
            prefix = s if s.startswith("sha256:") else "sha256:" + s
            if len(prefix) - 7 < 1:
                return None
            matches = [i for i in images if i.startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"image ID {s!r} is ambiguous")
        return None

    def resolve(self, ref_or_id: str) -> Image:
        data = self.db.read()
        image_id = self._resolve_id(ref_or_id, data)
        if image_id is None:
            raise NotFound(f"No such image: {_display(ref_or_id)}")
        return self._image(image_id, data)

    def exists(self, ref_or_id: str) -> bool:
        try:
            return self._resolve_id(ref_or_id, self.db.read()) is not None
        except Conflict:
            return True

    def history(self, ref_or_id: str) -> list[dict[str, Any]]:
        """docker's ``GET /images/{name}/history``: newest first; ``Id`` is the image ID on the
        top entry and ``<missing>`` below, ``Size`` the unpacked size of the layer an entry made."""
        img = self.resolve(ref_or_id)
        history = list(img.config.get("history") or []) or [
            {"created": img.created, "created_by": ""} for _ in img.layers]
        sizes = []
        for cid in img.chain_ids:
            try:
                sizes.append(int(self.snapshots.layer_meta(cid).get("unpacked_size", 0)))
            except NotFound:
                sizes.append(0)
        out = []
        li = 0
        for h in history:
            size = 0
            if not h.get("empty_layer"):
                size = sizes[li] if li < len(sizes) else 0
                li += 1
            out.append({"Id": "<missing>", "Created": rfc3339_to_unix(h.get("created", "")),
                        "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": size,
                        "Comment": h.get("comment", "")})
        out.reverse()
        if out:
            out[0]["Id"] = img.id
            out[0]["Tags"] = list(img.repo_tags) or None
        return out

    # ---- tagging and removal -----------------------------------------------------------------

    def tag(self, ref_or_id: str, new_ref: str) -> None:
        ref = _parse_tag_ref(new_ref)
        with self.db.update() as data:
            image_id = self._resolve_id(ref_or_id, data)
            if image_id is None:
                raise NotFound(f"No such image: {_display(ref_or_id)}")
            data["tags"][ref.tagged] = image_id
            data["images"][image_id]["added"] = now_rfc3339()

    def untag(self, ref: str) -> list[dict[str, str]]:
        r = parse_reference(ref)
        with self.db.update() as data:
            if r.digest is not None:
                for rec in data["images"].values():
                    key = f"{r.name}@{r.digest}"
                    if key in rec.get("repo_digests", []):
                        rec["repo_digests"].remove(key)
                        return [{"Untagged": r.familiar}]
                raise NotFound(f"No such image: {r.familiar}")
            if r.tagged not in data["tags"]:
                raise NotFound(f"No such image: {r.familiar}")
            del data["tags"][r.tagged]
        return [{"Untagged": r.familiar}]

    def remove(
        self,
        ref_or_id: str,
        force: bool = False,
        in_use: Callable[[str], Any] | None = None,
        prune: bool = True,
    ) -> list[dict[str, str]]:
        """docker rmi: untag, and delete the image when no name is left. Returns docker's
        ``[{"Untagged": …}, {"Deleted": …}]`` list."""
        events: list[dict[str, str]] = []
        deleted: str | None = None
        deleted_blobs: set[str] = set()
        deleted_chains: list[str] = []
        with self.db.update() as data:
            image_id = self._resolve_id(ref_or_id, data)
            if image_id is None:
                raise NotFound(f"No such image: {_display(ref_or_id)}")
            rec = data["images"][image_id]
            tags = sorted(t for t, i in data["tags"].items() if i == image_id)
            by_name = False
            name_ref: Reference | None = None
            with contextlib.suppress(InvalidArgument):
                name_ref = parse_reference(ref_or_id)
            if name_ref is not None and name_ref.digest is None and name_ref.tagged in tags:
                by_name = True
            user = in_use(image_id) if in_use is not None else None
            if by_name and name_ref is not None:
                if len(tags) > 1 or (force and user):
                    del data["tags"][name_ref.tagged]
                    return [{"Untagged": name_ref.familiar}]
                if user and not force:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{_display(ref_or_id)}" '
                        f"(must force) - container {str(user)[:12]} is using its referenced image "
                        f"{image_id.split(':')[1][:12]}"
                    )
            else:
                repos = {t.rsplit(":", 1)[0] for t in tags}
                if len(repos) > 1 and not force:
                    raise Conflict(
                        f"conflict: unable to delete {image_id.split(':')[1][:12]} (must be forced) - "
                        "image is referenced in multiple repositories"
                    )
                if user and not force:
                    raise Conflict(
                        f"conflict: unable to delete {image_id.split(':')[1][:12]} (must be forced) - "
                        f"image is being used by stopped container {str(user)[:12]}"
                    )
            for t in tags:
                del data["tags"][t]
                events.append({"Untagged": _familiar(t)})
            for d in rec.get("repo_digests", []):
                events.append({"Untagged": _familiar(d)})
            if user:
                rec["repo_digests"] = []
                return events
            del data["images"][image_id]
            deleted = image_id
            deleted_blobs = self._blobs_of(rec, image_id)
            with contextlib.suppress(NotFound, DataCorruption):
                deleted_chains = self._image(image_id, {"images": {image_id: rec}, "tags": {}}).chain_ids
            events.append({"Deleted": image_id})
        if deleted and prune:
            self._delete_image_content(deleted_blobs, deleted_chains)
        return events

    # ---- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """Hold this while writing blobs that are not referenced yet: GC leaves fresh blobs alone."""
        d = os.path.join(self.root, "images", "leases")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"{os.getpid()}-{uuid.uuid4().hex}")
        with open(p, "w") as f:
            f.write(str(time.time()))
        try:
            yield p
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def _active_leases(self) -> list[float]:
        d = os.path.join(self.root, "images", "leases")
        out = []
        with contextlib.suppress(FileNotFoundError):
            for n in os.listdir(d):
                pid = n.split("-", 1)[0]
                try:
                    os.kill(int(pid), 0)
                except (ProcessLookupError, ValueError):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(d, n))
                    continue
                except PermissionError:
                    pass
                with contextlib.suppress(FileNotFoundError, ValueError), open(os.path.join(d, n)) as f:
                    out.append(float(f.read() or 0))
        return out

    def store_manifest(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store a manifest or index document; returns its digest."""
        oci.media_type_of(data)  # must at least be a manifest-ish JSON object
        return self.content.put(data, expected_digest)

    def register(
        self,
        ref: str | Reference | list[str] | list[Reference] | None,
        manifest_digest: str,
        *,
        unpack: bool | None = None,
    ) -> Image:
        """Record an image whose manifest (or index) and blobs are in the content store, tag it
        with ``ref`` (one or several names, or none), and unpack its layers."""
        validate_digest(manifest_digest)
        raw = self.content.read(manifest_digest)
        mt = oci.media_type_of(raw)
        index_digest: str | None = None
        if mt in oci.INDEX_TYPES:
            index_digest = manifest_digest
            desc = oci.select_platform(oci.decode_index(raw))
            manifest_digest = desc.digest
            if not self.content.exists(manifest_digest):
                raise NotFound(f"manifest {manifest_digest} for this platform is not in the content store")
            raw = self.content.read(manifest_digest)
            mt = oci.media_type_of(raw)
        if mt not in oci.MANIFEST_TYPES:
            raise InvalidArgument(f"unsupported manifest media type: {mt}")
        m = oci.decode_manifest(raw)
        if m.config.media_type not in oci.CONFIG_TYPES:
            raise InvalidArgument(f"unsupported config media type: {m.config.media_type}")
        for d in [m.config, *m.layers]:
            if not self.content.exists(d.digest):
                raise NotFound(f"blob {d.digest} is not in the content store")
            if self.content.size(d.digest) != d.size:
                raise DataCorruption(f"blob {d.digest}: size mismatch with its descriptor")
        for layer in m.layers:
            oci.layer_compression(layer.media_type)
        cfg_raw = self.content.read(m.config.digest)
        cfg = oci.decode_config(cfg_raw)
        diff_ids = list(cfg.rootfs.diff_ids)
        if len(diff_ids) != len(m.layers):
            raise DataCorruption(
                f"image config has {len(diff_ids)} diff IDs but the manifest has {len(m.layers)} layers"
            )
        image_id = m.config.digest
        size = 0
        if self.unpack if unpack is None else unpack:
            chain = compute_chain_ids(diff_ids)
            for desc, diff_id, cid in zip(m.layers, diff_ids, chain, strict=True):
                meta = self.snapshots.unpack_layer(cid, diff_id, desc.digest, desc.media_type)
                size += int(meta.get("unpacked_size", 0))
        else:
            size = sum(d.size for d in m.layers)
        refs: list[Reference] = []
        if isinstance(ref, Reference):
            refs = [ref]
        elif isinstance(ref, str):
            refs = [parse_reference(ref)]
        elif ref:
            refs = [r if isinstance(r, Reference) else parse_reference(r) for r in ref]
        with self.db.update() as data:
            rec = data["images"].get(image_id) or {"repo_digests": []}
            rec["manifest"] = manifest_digest
            rec["index"] = index_digest
            rec["size"] = size
            rec["added"] = now_rfc3339()
            for r in refs:
                if r.tag is not None:
                    data["tags"][r.tagged] = image_id
                if r.domain and r.digest is not None:
                    key = f"{r.name}@{r.digest}"
                    if key not in rec["repo_digests"]:
                        rec["repo_digests"].append(key)
            data["images"][image_id] = rec
        return self.resolve(image_id)

    def add_repo_digest(self, image_id: str, name_at_digest: str) -> None:
        ref = parse_reference(name_at_digest)
        with self.db.update() as data:
            rec = data["images"].get(image_id)
            if rec is None:
                raise NotFound(f"No such image: {image_id}")
            key = f"{ref.name}@{ref.digest}"
            if ref.digest and key not in rec["repo_digests"]:
                rec["repo_digests"].append(key)

    def create_image(
        self,
        config: dict[str, Any],
        layers: list[LayerBlob],
        tags: list[str] | tuple[str, ...] = (),
        annotations: dict[str, str] | None = None,
    ) -> Image:
        """Write a new image (config + OCI manifest) over layers already in the content store."""
        config = dict(config)
        config.setdefault("architecture", oci.host_platform().architecture)
        config.setdefault("os", "linux")
        config["rootfs"] = {"type": "layers", "diff_ids": [lb.diff_id for lb in layers]}
        if "created" not in config:
            config["created"] = now_rfc3339()
        with self.lease():
            cfg_bytes = msgspec.json.encode(config)
            cfg_digest = self.content.put(cfg_bytes)
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
                "layers": [
                    {"mediaType": lb.media_type, "digest": lb.digest, "size": lb.size} for lb in layers
                ],
            }
            if annotations:
                manifest["annotations"] = annotations
            mdigest = self.content.put(msgspec.json.encode(manifest))
            return self.register(list(tags), mdigest)

    def write_layer(self, tar_stream: IO[bytes] | str, *, compress: bool = True) -> LayerBlob:
        """Store a layer tar (any compression) as a gzip layer blob; computes its diff ID."""
        from tugboat.snapshots.layer import HashingGzipWriter, decompressed

        with self.content.writer() as w:
            gz = HashingGzipWriter(w) if compress else None
            with decompressed(tar_stream) as src:  # checks the decompressor's status on exit
                while chunk := src.read(1 << 20):
                    (gz or w).write(chunk)
            if gz is not None:
                gz.close()
                digest = w.commit()
                return LayerBlob(digest, oci.OCI_LAYER_GZIP, gz.diff_id, w.size)
            digest = w.commit()
            return LayerBlob(digest, oci.OCI_LAYER, digest, w.size)

    def import_rootfs(
        self,
        tar_path_or_fileobj: IO[bytes] | str,
        ref: str | None = None,
        changes: list[str] | None = None,
        message: str | None = None,
        platform: str | None = None,
    ) -> Image:
        """``docker import``: a root filesystem tarball becomes a one-layer image."""
        from tugboat.images.changes import apply_changes

        with self.lease(), self.rollback_on_error():
            lb = self.write_layer(tar_path_or_fileobj)
            cfg_inner: dict[str, Any] = apply_changes({}, changes or [])
            created = now_rfc3339()
            config: dict[str, Any] = {
                "architecture": oci.host_platform().architecture,
                "os": "linux",
                "created": created,
                "config": cfg_inner,
                "history": [{"created": created, "created_by": "tug import",
                             **({"comment": message} if message else {"comment": "Imported from tarball"})}],
            }
            if platform:
                os_, _, arch = platform.partition("/")
                config["os"], config["architecture"] = os_ or "linux", arch or config["architecture"]
            return self.create_image(config, [lb], [ref] if ref else [])

    @contextlib.contextmanager
    def rollback_on_error(self) -> Iterator[None]:
        """On an exception, delete the blobs this thread added that no image references: a failed
        load, import or commit leaves the store as it was."""
        with self.content.journal() as added:
            try:
                yield
            except BaseException:
                self._delete_unreferenced(added)
                raise

    def _delete_unreferenced(self, digests: list[str]) -> None:
        used = self._referenced_blobs()
        for d in digests:
            if d not in used:
                with contextlib.suppress(NotFound):
                    self.content.delete(d)

    # ---- archives ---------------------------------------------------------------------------

    def load(self, fileobj_or_path: IO[bytes] | str, progress: Callable[[str], None] | None = None) -> list[str]:
        from tugboat.images.archive import load

        return load(self, fileobj_or_path, progress=progress)

    def save(self, refs: list[str], fileobj_or_path: IO[bytes] | str, fmt: str = "docker-archive") -> None:
        from tugboat.images.archive import save

        save(self, refs, fileobj_or_path, fmt)

    # ---- garbage collection ----------------------------------------------------------------

    def _blobs_of(self, rec: dict[str, Any], image_id: str) -> set[str]:
        used = {image_id}
        for key in ("manifest", "index"):
            d = rec.get(key)
            if not d:
                continue
            used.add(d)
            with contextlib.suppress(NotFound, DataCorruption, ValueError):
                doc = msgspec.json.decode(self.content.read(d))
                for sub in doc.get("manifests", []) or []:
                    used.add(sub["digest"])
                if doc.get("config"):
                    used.add(doc["config"]["digest"])
                for layer in doc.get("layers", []) or []:
                    used.add(layer["digest"])
        return used

    def _referenced_blobs(self) -> set[str]:
        data = self.db.read()
        used: set[str] = set()
        for image_id, rec in data["images"].items():
            used |= self._blobs_of(rec, image_id)
        return used

    def _delete_image_content(self, blobs: set[str], chains: list[str]) -> None:
        """After an image record is gone: delete its blobs and unpacked layers that nothing else
        references (only these, so in-flight work of others is never touched)."""
        used = self._referenced_blobs()
        for d in blobs - used:
            with contextlib.suppress(NotFound):
                self.content.delete(d)
        used_chains = self._referenced_chains()
        for cid in chains:
            if cid not in used_chains:
                self.snapshots.remove_layer(cid)

    def _referenced_chains(self) -> set[str]:
        used: set[str] = set()
        for img in self.list():
            used.update(img.chain_ids)
        used.update(self.snapshots.layers_in_use())
        return used

    def gc(self, grace: float = 60.0) -> dict[str, int]:
        """Delete blobs and unpacked layers that no image references. Blobs younger than
        ``grace`` seconds are spared (a builder or puller between writing a blob and recording
        its image), and while a lease is held only blobs older than every lease go.
        Returns counts and bytes reclaimed."""
        leases = self._active_leases()
        oldest_lease = min(leases) if leases else None
        used = self._referenced_blobs()
        now = time.time()
        blobs = reclaimed = 0
        for d in list(self.content.list()):
            if d in used:
                continue
            p = self.content.path_for(d)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < grace:
                continue
            if oldest_lease is not None and st.st_ctime >= oldest_lease - 1:
                continue
            with contextlib.suppress(NotFound):
                self.content.delete(d)
                blobs += 1
                reclaimed += st.st_size
        chains = self._referenced_chains()
        layers = 0
        if oldest_lease is None:
            for cid in self.snapshots.list_layers():
                if cid not in chains:
                    with contextlib.suppress(NotFound):
                        reclaimed += int(self.snapshots.layer_meta(cid).get("unpacked_size", 0))
                    self.snapshots.remove_layer(cid)
                    layers += 1
        return {"blobs": blobs, "layers": layers, "reclaimed": reclaimed}

    def prune(
        self, all: bool = False, in_use: Callable[[str], Any] | None = None,
        filters: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """``docker image prune``: remove dangling images (``all``: every image no container uses)."""
        def usage() -> int:
            return self.content.total_size() + int(self.snapshots.usage()["unpacked_size"])

        deleted: list[dict[str, str]] = []
        before = usage()
        for img in self.list():
            if not all and img.repo_tags:
                continue
            if in_use is not None and in_use(img.id):
                continue
            if filters and not _match_label_filters(img, filters.get("label", [])):
                continue
            with contextlib.suppress(NotFound, Conflict):
                deleted.extend(self.remove(img.id, force=True, in_use=in_use))
        self.gc()
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": max(0, before - usage())}

    # ---- consistency -------------------------------------------------------------------------

    def check(self, repair: bool = False, verify_blobs: bool = True) -> dict[str, Any]:
        """Consistency of the store. ``problems`` are real inconsistencies; ``garbage`` lists
        leftovers of interrupted work (harmless; removed with ``repair``)."""
        problems: list[str] = []
        garbage: list[str] = []
        for d in self.content.list():
            try:
                validate_digest(d)
            except InvalidArgument:
                problems.append(f"content: malformed blob name {d}")
                continue
            if verify_blobs and not self.content.verify(d):
                problems.append(f"content: blob {d} does not match its digest")
        garbage.extend(self.content.ingest_leftovers())
        garbage.extend(self.snapshots.leftovers())
        images_dir = os.path.join(self.root, "images")
        with contextlib.suppress(FileNotFoundError):
            garbage.extend(os.path.join(images_dir, n) for n in os.listdir(images_dir) if ".tmp-" in n)
        with contextlib.suppress(FileNotFoundError):
            garbage.extend(os.path.join(self.tmp_dir, n) for n in os.listdir(self.tmp_dir))
        data = self.db.read()
        for image_id in data["images"]:
            try:
                img = self._image(image_id, data)
            except (NotFound, DataCorruption, ValueError) as exc:
                problems.append(f"image {image_id}: {exc}")
                continue
            for desc in img.manifest.get("layers", []):
                if not self.content.exists(desc["digest"]):
                    problems.append(f"image {image_id}: layer blob {desc['digest']} is missing")
            for cid in img.chain_ids:
                lfs = self.snapshots.layer_dir(cid)
                if os.path.exists(lfs) and not self.snapshots.has_layer(cid):
                    problems.append(f"snapshot layer {cid}: incomplete (no meta.json)")
        for ref, image_id in data["tags"].items():
            if image_id not in data["images"]:
                problems.append(f"tag {ref}: points to missing image {image_id}")
        for cid in self.snapshots.list_layers():
            if not self.snapshots.has_layer(cid):
                problems.append(f"snapshot layer {cid}: incomplete (no meta.json)")
        repaired = 0
        if repair:
            repaired += self.content.cleanup_ingest(older_than=3600)
            repaired += self.snapshots.cleanup()
            for g in garbage:
                if not g.startswith((images_dir + "/db.json.tmp-", self.tmp_dir + "/")):
                    continue
                pid = g.rsplit("-", 1)[-1] if ".tmp-" in g else ""
                if pid.isdigit() and pid_alive(int(pid)):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(g)
                    repaired += 1
            garbage = [g for g in garbage if os.path.lexists(g)]
        return {"ok": not problems, "problems": problems, "garbage": garbage, "repaired": repaired,
                "blobs": sum(1 for _ in self.content.list()), "images": len(data["images"]),
                "tags": len(data["tags"])}

    def df(self) -> dict[str, Any]:
        imgs = self.list()
        chains_in_use = self.snapshots.layers_in_use()
        total = sum(i.size for i in imgs)
        active = sum(1 for i in imgs if set(i.chain_ids) & chains_in_use)
        return {"images": len(imgs), "active": active, "size": total,
                "content_size": self.content.total_size(), "layers": self.snapshots.usage()}


def _familiar(s: str) -> str:
    from tugboat.oci.reference import parse_normalized

    try:
        return parse_normalized(s).familiar
    except InvalidArgument:
        return s


def _display(s: str) -> str:
    """How docker names a missing image in its error: names normalised with a tag."""
    try:
        if _HEX_PREFIX_RE.match(s) and not s.isalpha():
            return s
        return parse_reference(s).familiar
    except InvalidArgument:
        return s


def _match_label_filters(img: Image, labels: list[str]) -> bool:
    have = ((img.config.get("config") or {}).get("Labels")) or {}
    for f in labels:
        k, eq, v = f.partition("=")
        if k not in have or (eq and have[k] != v):
            return False
    return True
