"""Manifest media types and the checks the registry applies to a pushed manifest."""

from __future__ import annotations

from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (*IMAGE_MANIFESTS, *INDEXES)
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


class ManifestError(ValueError):
    """A manifest the registry refuses: ``code`` is the spec's error code."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


def non_distributable(desc: dict) -> bool:
    mt = desc.get("mediaType", "")
    return ".nondistributable." in mt or mt == DOCKER_FOREIGN_LAYER


def media_type_of(doc: dict, content_type: str | None) -> str:
    """The manifest's media type: its ``mediaType`` field, the Content-Type, or a guess."""
    ct = (content_type or "").split(";")[0].strip()
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        if ct and ct != mt and ct in MANIFEST_TYPES:
            raise ManifestError("MANIFEST_INVALID", f"mediaType {mt!r} does not match Content-Type {ct!r}")
        return mt
    if ct and ct not in ("application/json", "application/octet-stream"):
        return ct
    if "manifests" in doc:
        return OCI_INDEX
    if doc.get("schemaVersion") == 1:
        return DOCKER_V1_SIGNED
    return OCI_MANIFEST


def check_shape(doc: Any, media_type: str) -> None:
    """Structural checks: the fields a manifest of this media type must have."""
    if not isinstance(doc, dict):
        raise ManifestError("MANIFEST_INVALID", "manifest is not a JSON object")
    if doc.get("schemaVersion") != 2 and media_type in MANIFEST_TYPES:
        raise ManifestError("MANIFEST_INVALID", "schemaVersion must be 2")

    def check_desc(d: Any, where: str) -> None:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str) or not isinstance(d.get("size"), int):
            raise ManifestError("MANIFEST_INVALID", f"{where} is not a valid descriptor")

    if media_type in IMAGE_MANIFESTS:
        check_desc(doc.get("config"), "config")
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestError("MANIFEST_INVALID", "layers must be a list")
        for i, layer in enumerate(layers):
            check_desc(layer, f"layers[{i}]")
    elif media_type in INDEXES:
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise ManifestError("MANIFEST_INVALID", "manifests must be a list")
        for i, m in enumerate(ms):
            check_desc(m, f"manifests[{i}]")
    if "subject" in doc:
        check_desc(doc["subject"], "subject")


def required_blobs(doc: dict, media_type: str) -> tuple[list[str], list[str]]:
    """(blobs, manifests) a manifest names that must already be in the repository."""
    blobs: list[str] = []
    manifests: list[str] = []
    if media_type in IMAGE_MANIFESTS:
        blobs.append(doc["config"]["digest"])
        for layer in doc.get("layers", []):
            if not non_distributable(layer) and not layer.get("urls"):
                blobs.append(layer["digest"])
    elif media_type in INDEXES:
        manifests.extend(m["digest"] for m in doc.get("manifests", []))
    return blobs, manifests


def references(doc: dict) -> list[str]:
    """Every digest a manifest refers to (for garbage collection), the subject excluded."""
    out: list[str] = []
    cfg = doc.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("digest"), str):
        out.append(cfg["digest"])
    for key in ("layers", "manifests", "blobs"):
        for d in doc.get(key) or []:
            if isinstance(d, dict) and isinstance(d.get("digest"), str):
                out.append(d["digest"])
    for fs in doc.get("fsLayers") or []:  # schema 1
        if isinstance(fs, dict) and isinstance(fs.get("blobSum"), str):
            out.append(fs["blobSum"])
    return out


def referrer_descriptor(doc: dict, media_type: str, digest: str, size: int) -> dict:
    """The descriptor the referrers API lists for a manifest that has a ``subject``."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    at = doc.get("artifactType")
    if not at and media_type in IMAGE_MANIFESTS:
        at = (doc.get("config") or {}).get("mediaType")
    if at:
        desc["artifactType"] = at
    if doc.get("annotations"):
        desc["annotations"] = doc["annotations"]
    return desc
