"""OCI/Docker models, digests, platform selection."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from tugboat.errors import DataCorruption, InvalidArgument, NotFound
from tugboat.oci import image as oci
from tugboat.oci.digest import Digest, chain_ids, sha256_digest, validate_digest


def test_digest_validation() -> None:
    d = sha256_digest(b"hello")
    assert validate_digest(d) == d
    assert Digest(d).hex == hashlib.sha256(b"hello").hexdigest()
    assert Digest(d).short == d[7:19]
    assert Digest.from_bytes(b"x", "sha512").algorithm == "sha512"
    for bad, msg in [("sha256:xyz", "invalid checksum digest length"), ("nope", "invalid checksum digest format"),
                     ("sha1:" + "a" * 40, "unsupported digest algorithm"),
                     ("sha256:" + "A" * 64, "invalid checksum digest format")]:
        with pytest.raises(InvalidArgument, match=msg):
            validate_digest(bad)


def test_chain_ids() -> None:
    a, b = sha256_digest(b"a"), sha256_digest(b"b")
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b])[1] == sha256_digest(f"{a} {b}".encode())


def test_manifest_roundtrip_and_docker_types() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": sha256_digest(b"c"), "size": 1},
        "layers": [{"mediaType": oci.DOCKER_LAYER_GZIP, "digest": sha256_digest(b"l"), "size": 2}],
    }
    m = oci.decode_manifest(msgspec.json.encode(doc))
    assert m.layers[0].media_type == oci.DOCKER_LAYER_GZIP
    assert msgspec.json.decode(oci.encode(m)) == doc
    assert oci.layer_compression(oci.DOCKER_LAYER_GZIP) == "gzip"
    assert oci.layer_compression(oci.OCI_LAYER_ZSTD) == "zstd"
    with pytest.raises(InvalidArgument, match="unsupported layer media type"):
        oci.layer_compression("application/x-whatever")
    with pytest.raises(DataCorruption):
        oci.decode_manifest(b'{"schemaVersion": "two"}')


def test_config_model() -> None:
    cfg = oci.decode_config(b'{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Cmd":["sh"],'
                            b'"ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}')
    assert cfg.config is not None and cfg.config.cmd == ["sh"] and cfg.config.exposed_ports == {"80/tcp": {}}


def test_platform_selection() -> None:
    def d(arch: str, variant: str | None = None, att: bool = False) -> dict:
        out = {"mediaType": oci.OCI_MANIFEST, "digest": sha256_digest(arch.encode() + bytes(att)), "size": 1,
               "platform": {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}}
        if att:
            out["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
            out["platform"] = {"architecture": "unknown", "os": "unknown"}
        return out

    idx = oci.decode_index(msgspec.json.encode({"schemaVersion": 2, "manifests": [
        d("arm64", "v8"), d("amd64", att=True), d("amd64"), d("s390x")]}))
    got = oci.select_platform(idx, oci.Platform(architecture="amd64", os="linux"))
    assert got.platform is not None and got.platform.architecture == "amd64"
    assert oci.select_platform(idx, oci.Platform(architecture="arm64", os="linux", variant="v8")).platform.variant == "v8"
    with pytest.raises(NotFound, match="no matching manifest for linux/riscv64"):
        oci.select_platform(idx, oci.Platform(architecture="riscv64", os="linux"))
    assert oci.media_type_of(b'{"manifests": []}') == oci.OCI_INDEX
