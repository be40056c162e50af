"""``tug save`` / ``tug load``: docker-archive and OCI image layouts (directory or tar).

``docker-archive`` is what ``docker save`` (25+) writes: one tar that is both an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/…``) and a docker archive (``manifest.json``,
``repositories``), with uncompressed layers so that their digests are the diff IDs. ``docker
load``, ``skopeo docker-archive:`` and ``skopeo oci-archive:`` all read it.

``oci-archive`` / ``oci`` write the stored manifests and blobs unchanged (compressed layers) as
an OCI layout tar / directory, names in ``io.containerd.image.name`` and the tag in
``org.opencontainers.image.ref.name``, as docker and containerd do.

``load`` reads all of them and what ``skopeo`` writes (``docker-archive:`` with ``<hex>.tar``
layers, ``oci:`` directories, ``oci-archive:``); every blob goes through the content store's
verified ingest, and the image records are written last, so an interrupted load leaves only
unreferenced blobs (``tug image prune`` / ``tug system check --repair`` clean them).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import msgspec

from tugboat.errors import DataCorruption, InvalidArgument, NotFound
from tugboat.oci import image as oci
from tugboat.oci.digest import validate_digest
from tugboat.oci.reference import Reference, parse_reference
from tugboat.snapshots.layer import MAX_SPECIAL_HEADER

FORMATS = ("docker-archive", "oci-archive", "oci")


# ---- reading an archive: a tar file or a directory ------------------------------------------


class _Source:
    def names(self) -> set[str]:
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidArgument(f"{name}: metadata file too large")
        return data

    def has(self, name: str) -> bool:
        return _norm(name) in self.names()


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts or name.startswith("/"):
        raise DataCorruption(f"invalid path in archive: {name!r}")
    return "/".join(parts)


MAX_MEMBERS = 1_000_000  # an image archive has a few per layer; each costs ~1 KB of memory here


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads PAX and GNU long-name header bodies whole into memory: refuse big ones
    before reading (the same limit as our layer reader and Go's archive/tar)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        special = self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                                tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
        if special and self.size > MAX_SPECIAL_HEADER:
            raise DataCorruption(f"invalid archive: a tar extended header of {self.size} bytes "
                                 f"(the limit is {MAX_SPECIAL_HEADER} bytes)")
        out = super()._proc_member(tarfile_)  # type: ignore[misc]
        if self.type == tarfile.XGLTYPE and sum(
                len(k) + len(v) for k, v in tarfile_.pax_headers.items()) > MAX_SPECIAL_HEADER:
            raise DataCorruption(f"invalid archive: tar global headers over {MAX_SPECIAL_HEADER} bytes in all")
        return out  # type: ignore[no-any-return]


class _TarSource(_Source):
    def __init__(self, f: IO[bytes]) -> None:
        try:
            self.tf = tarfile.open(fileobj=f, mode="r:", tarinfo=_BoundedTarInfo)  # noqa: SIM115 - lives with the source
            self.members: dict[str, tarfile.TarInfo] = {}
            for n, m in enumerate(self.tf):
                if n >= MAX_MEMBERS:
                    raise DataCorruption(f"invalid archive: more than {MAX_MEMBERS} entries")
                with contextlib.suppress(DataCorruption):
                    self.members[_norm(m.name)] = m
        except tarfile.TarError as exc:
            raise DataCorruption(f"invalid archive: {exc}") from None

    def names(self) -> set[str]:
        return set(self.members)

    def _resolve(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        m = self.members.get(_norm(name))
        if m is None:
            raise NotFound(f"{name}: not found in the archive")
        if (m.issym() or m.islnk()) and depth < 10:
            target = m.linkname if m.islnk() else os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname))
            return self._resolve(target, depth + 1)
        if not m.isfile():
            raise DataCorruption(f"{name}: not a regular file in the archive")
        return m

    def open(self, name: str) -> IO[bytes]:
        f = self.tf.extractfile(self._resolve(name))
        assert f is not None
        return f  # type: ignore[return-value]

    def size(self, name: str) -> int:
        return self._resolve(name).size


class _DirSource(_Source):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def names(self) -> set[str]:
        out = set()
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                out.add(os.path.relpath(os.path.join(dirpath, f), self.root))
        return out

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, _norm(name)))

    def open(self, name: str) -> IO[bytes]:
        p = os.path.join(self.root, _norm(name))
        real = os.path.realpath(p)
        if not real.startswith(self.root + "/"):
            raise DataCorruption(f"{name}: points outside the layout")
        try:
            return open(real, "rb")
        except FileNotFoundError:
            raise NotFound(f"{name}: not found in {self.root}") from None

    def size(self, name: str) -> int:
        return os.stat(os.path.join(self.root, _norm(name))).st_size


@contextlib.contextmanager
def _open_source(images: Any, src: IO[bytes] | str) -> Iterator[_Source]:
    if isinstance(src, str) and os.path.isdir(src):
        yield _DirSource(src)
        return
    if isinstance(src, str):
        with open(src, "rb") as f:
            yield _TarSource(_decompressed(images, f))
        return
    yield _TarSource(_decompressed(images, src))


def _decompressed(images: Any, f: IO[bytes]) -> IO[bytes]:
    """A seekable, uncompressed view of an archive stream (spooled to disk when needed)."""
    seekable = False
    with contextlib.suppress(AttributeError, OSError, ValueError):
        seekable = f.seekable() and stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    if seekable:
        head = f.read(4)
        f.seek(0)
        if not (head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd")):
            return f
    from tugboat.snapshots.layer import decompressed

    os.makedirs(images.tmp_dir, exist_ok=True)
    spool = tempfile.TemporaryFile(dir=images.tmp_dir)  # noqa: SIM115 - returned
    with decompressed(f) as src:
        while chunk := src.read(1 << 20):
            spool.write(chunk)
    spool.seek(0)
    return spool


# ---- load --------------------------------------------------------------------------------------


def load(images: Any, src: IO[bytes] | str, progress: Callable[[str], None] | None = None) -> list[str]:
    """Load every image of an archive or layout; returns ``Loaded image: x`` lines' subjects
    (familiar names, or image IDs for untagged images)."""
    progress = progress or (lambda s: None)
    with images.lease(), images.rollback_on_error(), _open_source(images, src) as source:
        if source.has("manifest.json"):
            return _load_docker(images, source, progress)
        if source.has("index.json"):
            return _load_oci(images, source, progress)
        raise InvalidArgument(
            "unrecognised image archive: it has neither manifest.json (docker-archive) nor index.json (OCI layout)"
        )


def _ingest(images: Any, source: _Source, name: str, digest: str | None = None, size: int | None = None) -> str:
    with source.open(name) as f:
        return images.content.ingest(f, digest, size)


def _load_docker(images: Any, source: _Source, progress: Callable[[str], None]) -> list[str]:
    try:
        entries = msgspec.json.decode(source.read("manifest.json"))
    except msgspec.DecodeError as exc:
        raise DataCorruption(f"invalid manifest.json: {exc}") from None
    if not isinstance(entries, list):
        raise DataCorruption("invalid manifest.json: not a list")
    loaded: list[str] = []
    for entry in entries:
        cfg_name = entry.get("Config")
        if not isinstance(cfg_name, str):
            raise DataCorruption("invalid manifest.json: entry without Config")
        cfg_bytes = source.read(cfg_name)
        cfg = oci.decode_config(cfg_bytes)
        cfg_digest = images.content.put(cfg_bytes)
        diff_ids = list(cfg.rootfs.diff_ids)
        layer_names = entry.get("Layers") or []
        if len(layer_names) != len(diff_ids):
            raise DataCorruption(
                f"manifest.json lists {len(layer_names)} layers but the image config has {len(diff_ids)} diff IDs"
            )
        layers = []
        for i, (lname, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True)):
            progress(f"Loading layer {i + 1}/{len(layer_names)} {diff_id[7:19]}")
            with source.open(lname) as f:
                head = f.read(4)
            from tugboat.snapshots.layer import detect_compression

            comp = detect_compression(head)
            if comp == "":
                digest = _ingest(images, source, lname, diff_id)  # uncompressed: digest == diff ID
                mt = oci.OCI_LAYER
            else:
                digest = _ingest(images, source, lname)
                mt = oci.OCI_LAYER_GZIP if comp == "gzip" else oci.OCI_LAYER_ZSTD
            layers.append({"mediaType": mt, "digest": digest, "size": images.content.size(digest)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
            "layers": layers,
        }
        mdigest = images.content.put(msgspec.json.encode(manifest))
        tags = [t for t in (entry.get("RepoTags") or []) if isinstance(t, str)]
        refs = [parse_reference(t) for t in tags]
        images.register(refs, mdigest)
        if refs:
            loaded.extend(r.familiar for r in refs)
        else:
            loaded.append(cfg_digest)
    return loaded


def _ref_from_annotations(ann: dict[str, str] | None) -> Reference | None:
    """The image name of an index entry: containerd's full name when its tag agrees with
    ``org.opencontainers.image.ref.name``; else the ref name (skopeo/umoci ``oci:dir:NAME``: a full
    reference or a bare name used as the repository)."""
    ann = ann or {}
    full = ann.get(oci.ANNOTATION_CONTAINERD_NAME)
    name = ann.get(oci.ANNOTATION_REF_NAME)
    if full:
        with contextlib.suppress(InvalidArgument):
            r = parse_reference(full)
            if not name or name == r.tag:
                return r
    if name:
        with contextlib.suppress(InvalidArgument):
            return parse_reference(name)
    return None


def _load_oci(images: Any, source: _Source, progress: Callable[[str], None]) -> list[str]:
    if source.has("oci-layout"):
        layout = msgspec.json.decode(source.read("oci-layout"))
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise DataCorruption("invalid oci-layout file")
    index = oci.decode_index(source.read("index.json"))
    loaded: list[str] = []

    def blob_name(digest: str) -> str:
        alg, hexpart = validate_digest(digest).split(":", 1)
        return f"blobs/{alg}/{hexpart}"

    def ingest_desc(d: oci.Descriptor) -> None:
        _ingest(images, source, blob_name(d.digest), d.digest, d.size)

    for desc in index.manifests:
        if desc.media_type not in oci.INDEX_TYPES | oci.MANIFEST_TYPES:
            continue
        ingest_desc(desc)
        raw = images.content.read(desc.digest)
        manifest_desc = desc
        if desc.media_type in oci.INDEX_TYPES:
            sub = oci.decode_index(raw)
            candidates = [m for m in sub.manifests if source.has(blob_name(m.digest))]
            try:
                manifest_desc = oci.select_platform(oci.Index(schema_version=2, manifests=candidates))
            except NotFound:
                raise NotFound(f"index {desc.digest}: no manifest for this platform in the archive") from None
            ingest_desc(manifest_desc)
        m = oci.decode_manifest(images.content.read(manifest_desc.digest))
        ingest_desc(m.config)
        for i, layer in enumerate(m.layers):
            oci.layer_compression(layer.media_type)
            progress(f"Loading layer {i + 1}/{len(m.layers)} {layer.digest[7:19]}")
            ingest_desc(layer)
        ref = _ref_from_annotations(desc.annotations)
        img = images.register([ref] if ref else [], desc.digest)
        loaded.append(ref.familiar if ref else img.id)
    if not loaded:
        raise InvalidArgument("the OCI layout's index.json lists no image manifests")
    return loaded


# ---- save --------------------------------------------------------------------------------------


class _TarOut:
    """Writes files into a tar stream, or into a directory for the ``oci`` format."""

    def __init__(self, target: IO[bytes] | str, directory: bool) -> None:
        self.directory = directory
        self.written: set[str] = set()
        if directory:
            assert isinstance(target, str)
            self.root = target
            os.makedirs(target, exist_ok=True)
            self.tf = None
        else:
            self.tf = tarfile.open(fileobj=target, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]  # noqa: SIM115

    def add_dir(self, name: str) -> None:
        if name in self.written:
            return
        self.written.add(name)
        if self.tf is None:
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
            return
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
        self.tf.addfile(ti)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_file(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, f: IO[bytes], size: int) -> None:
        if name in self.written:
            return
        self.written.add(name)
        if self.tf is None:
            p = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p + ".tmp", "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
            os.rename(p + ".tmp", p)
            return
        ti = tarfile.TarInfo(name)
        ti.mode, ti.mtime, ti.size = 0o644, 0, size
        self.tf.addfile(ti, f)

    def close(self) -> None:
        if self.tf is not None:
            self.tf.close()


def _blob_path(digest: str) -> str:
    alg, hexpart = digest.split(":", 1)
    return f"blobs/{alg}/{hexpart}"


def save(images: Any, refs: list[str], target: IO[bytes] | str, fmt: str = "docker-archive") -> None:
    if fmt not in FORMATS:
        raise InvalidArgument(f"unsupported archive format {fmt!r} (use one of {', '.join(FORMATS)})")
    if not refs:
        raise InvalidArgument("tug save: no images given")
    # resolve first: fail before writing anything
    selected: list[tuple[Any, list[Reference]]] = []
    for r in refs:
        img = images.resolve(r)
        names: list[Reference] = []
        if not _is_id_like(r, img.id):
            with contextlib.suppress(InvalidArgument):
                ref = parse_reference(r)
                if ref.digest is None:
                    names = [ref]
        selected.append((img, names))
    if fmt == "oci":
        assert isinstance(target, str)
        out = _TarOut(target, directory=True)
        _write_oci(images, out, selected, compressed=True)
        return
    own: IO[bytes] | None = None
    if isinstance(target, str):
        tmp = target + ".tmp"
        own = open(tmp, "wb")  # noqa: SIM115
        stream: IO[bytes] = own
    else:
        stream = target
    try:
        out = _TarOut(stream, directory=False)
        if fmt == "docker-archive":
            _write_docker(images, out, selected)
        else:
            _write_oci(images, out, selected, compressed=True)
        out.close()
        if own is not None:
            own.flush()
            os.fsync(own.fileno())
            own.close()
            assert isinstance(target, str)
            os.rename(target + ".tmp", target)
    except BaseException:
        if own is not None:
            own.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(target) + ".tmp")
        raise


def _is_id_like(s: str, image_id: str) -> bool:
    h = s[7:] if s.startswith("sha256:") else s
    return len(h) >= 1 and image_id.split(":", 1)[1].startswith(h)


def _write_oci(images: Any, out: _TarOut, selected: list[tuple[Any, list[Reference]]], compressed: bool) -> None:
    out.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.add_dir("blobs")
    out.add_dir("blobs/sha256")
    manifests = []
    for img, names in selected:
        digests = [img.manifest_digest] + [d["digest"] for d in img.manifest.get("layers", [])] + [img.id]
        for d in digests:
            with images.content.open(d) as f:
                out.add_file(_blob_path(d), f, images.content.size(d))
        base = {"mediaType": img.media_type, "digest": img.manifest_digest,
                "size": images.content.size(img.manifest_digest)}
        if not names:
            manifests.append(base)
        for ref in names:
            manifests.append({**base, "annotations": {
                oci.ANNOTATION_CONTAINERD_NAME: str(ref), oci.ANNOTATION_REF_NAME: ref.tag or "latest"}})
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests}
    out.add_bytes("index.json", msgspec.json.encode(index))


def _write_docker(images: Any, out: _TarOut, selected: list[tuple[Any, list[Reference]]]) -> None:
    from tugboat.snapshots.layer import decompressed

    out.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.add_dir("blobs")
    out.add_dir("blobs/sha256")
    entries = []
    index_manifests = []
    repositories: dict[str, dict[str, str]] = {}
    os.makedirs(images.tmp_dir, exist_ok=True)
    for img, names in selected:
        layer_descs = []
        layer_paths = []
        for desc, diff_id in zip(img.manifest.get("layers", []), img.layers, strict=True):
            path = _blob_path(diff_id)
            if oci.layer_compression(desc["mediaType"]) == "":
                with images.content.open(desc["digest"]) as f:
                    size = images.content.size(desc["digest"])
                    out.add_file(path, f, size)
            else:
                with tempfile.TemporaryFile(dir=images.tmp_dir) as spool:
                    with decompressed(images.content.path(desc["digest"])) as src:
                        while chunk := src.read(1 << 20):
                            spool.write(chunk)
                    size = spool.tell()
                    spool.seek(0)
                    out.add_file(path, spool, size)
            layer_descs.append({"mediaType": oci.OCI_LAYER, "digest": diff_id, "size": size})
            layer_paths.append(path)
        cfg_bytes = images.content.read(img.id)
        out.add_bytes(_blob_path(img.id), cfg_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": img.id, "size": len(cfg_bytes)},
            "layers": layer_descs,
        }
        mbytes = msgspec.json.encode(manifest)
        from tugboat.oci.digest import sha256_digest

        mdigest = sha256_digest(mbytes)
        out.add_bytes(_blob_path(mdigest), mbytes)
        base = {"mediaType": oci.OCI_MANIFEST, "digest": mdigest, "size": len(mbytes)}
        if not names:
            index_manifests.append(base)
        for ref in names:
            index_manifests.append({**base, "annotations": {
                oci.ANNOTATION_CONTAINERD_NAME: str(ref), oci.ANNOTATION_REF_NAME: ref.tag or "latest"}})
            if layer_paths:
                repositories.setdefault(ref.familiar_name, {})[ref.tag or "latest"] = img.layers[-1].split(":")[1]
        entries.append({
            "Config": _blob_path(img.id),
            "RepoTags": [r.familiar for r in names] or None,
            "Layers": layer_paths,
        })
    out.add_bytes("index.json", msgspec.json.encode(
        {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": index_manifests}))
    out.add_bytes("manifest.json", msgspec.json.encode(entries))
    if repositories:
        out.add_bytes("repositories", msgspec.json.encode(repositories))
