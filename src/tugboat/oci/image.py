"""Typed models of the OCI image spec and Docker's image manifest schema 2 (msgspec Structs).

Digests are always computed over the bytes as received or written; never re-encode a document
and expect the same digest. ``decode_*`` helpers validate the shape at decode time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from tugboat.errors import DataCorruption, InvalidArgument, NotFound

# OCI media types
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_LAYOUT_VERSION = "1.0.0"

# Docker schema 2 media types
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# layer media type -> compression ("gzip", "zstd" or "" for none)
LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"


def layer_compression(media_type: str) -> str:
    """The compression of a layer media type; ``InvalidArgument`` for unknown media types."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise InvalidArgument(f"unsupported layer media type: {media_type!r}") from None


class Platform(msgspec.Struct, omit_defaults=True):
    architecture: str
    os: str
    os_version: str | None = msgspec.field(default=None, name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")
    variant: str | None = None


class Descriptor(msgspec.Struct, omit_defaults=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None


class Manifest(msgspec.Struct, omit_defaults=True, rename="camel"):
    schema_version: int
    config: Descriptor
    layers: list[Descriptor] = []
    media_type: str | None = None
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None


class Index(msgspec.Struct, omit_defaults=True, rename="camel"):
    schema_version: int
    manifests: list[Descriptor] = []
    media_type: str | None = None
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None


class ContainerConfig(msgspec.Struct, omit_defaults=True, rename="pascal"):
    user: str | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool | None = None
    healthcheck: dict[str, Any] | None = None
    on_build: list[str] | None = msgspec.field(default=None, name="OnBuild")
    shell: list[str] | None = None


class RootFS(msgspec.Struct, omit_defaults=True):
    type: str = "layers"
    diff_ids: list[str] = []


class History(msgspec.Struct, omit_defaults=True):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(msgspec.Struct, omit_defaults=True):
    architecture: str = "amd64"
    os: str = "linux"
    created: str | None = None
    author: str | None = None
    variant: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS = msgspec.field(default_factory=RootFS)
    history: list[History] | None = None


class OCILayout(msgspec.Struct):
    imageLayoutVersion: str = OCI_LAYOUT_VERSION


class LayerBlob(NamedTuple):
    """A layer blob in the content store: what ``create_image`` and ``Snapshotter.diff`` trade."""

    digest: str  # of the (compressed) blob
    media_type: str
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # bytes of the blob


def encode(obj: Any) -> bytes:
    """Compact JSON bytes of a Struct or plain object."""
    return msgspec.json.encode(obj)


def decode_manifest(data: bytes) -> Manifest:
    try:
        m = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise DataCorruption(f"invalid image manifest: {exc}") from None
    if m.schema_version != 2:
        raise InvalidArgument(f"unsupported manifest schema version {m.schema_version}")
    return m


def decode_index(data: bytes) -> Index:
    try:
        return msgspec.json.decode(data, type=Index)
    except msgspec.DecodeError as exc:
        raise DataCorruption(f"invalid image index: {exc}") from None


def decode_config(data: bytes) -> ImageConfig:
    try:
        return msgspec.json.decode(data, type=ImageConfig)
    except msgspec.DecodeError as exc:
        raise DataCorruption(f"invalid image config: {exc}") from None


def media_type_of(data: bytes) -> str:
    """The media type a manifest-ish JSON document declares (or infers: ``manifests`` -> index)."""
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise DataCorruption(f"invalid JSON document: {exc}") from None
    if not isinstance(doc, dict):
        raise DataCorruption("invalid manifest: not a JSON object")
    mt = doc.get("mediaType")
    if mt:
        return str(mt)
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise DataCorruption("document is neither an image index nor a manifest")


def host_platform() -> Platform:
    import platform as _p

    machine = _p.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    return Platform(architecture=arch, os="linux", variant="v8" if arch == "arm64" else None)


def select_platform(index: Index, want: Platform | None = None) -> Descriptor:
    """The manifest of an index for ``want`` (default: this host, linux/amd64 here).

    Entries without a platform match only if nothing matches exactly; attestation manifests
    (``vnd.docker.reference.type``) are skipped.
    """
    want = want or host_platform()
    fallback: Descriptor | None = None
    for d in index.manifests:
        if d.annotations and "vnd.docker.reference.type" in d.annotations:
            continue
        if d.platform is None:
            fallback = fallback or d
            continue
        p = d.platform
        if p.os != want.os or p.architecture != want.architecture:
            continue
        if want.variant and p.variant and p.variant != want.variant:
            continue
        return d
    if fallback is not None:
        return fallback
    raise NotFound(
        f"no matching manifest for {want.os}/{want.architecture} in the manifest list entries"
    )
