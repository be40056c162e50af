"""Content digests (``algorithm:hex``) as the OCI image spec defines them: sha256 and sha512."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tugboat.errors import InvalidArgument

SHA256 = "sha256"
SHA512 = "sha512"
ALGORITHMS: dict[str, int] = {SHA256: 64, SHA512: 128}

_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_RE = re.compile(r"^[a-f0-9]+$")


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data`` (no ``sha256:`` prefix)."""
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compute(data: bytes, algorithm: str = SHA256) -> str:
    """``algorithm:hex`` of ``data``."""
    return f"{algorithm}:{_hash(algorithm, data)}"


def _hash(algorithm: str, data: bytes) -> str:
    h = new_hasher(algorithm)
    h.update(data)
    return h.hexdigest()


def new_hasher(algorithm: str = SHA256) -> Any:
    """A hashlib object for a supported algorithm (``InvalidArgument`` otherwise)."""
    if algorithm == SHA256:
        return hashlib.sha256()
    if algorithm == SHA512:
        return hashlib.sha512()
    raise InvalidArgument(f"unsupported digest algorithm: {algorithm}")


def validate_digest(s: str) -> str:
    """Return ``s`` when it is a well-formed digest of a supported algorithm, else raise.

    Messages follow go-digest: ``invalid checksum digest format``, ``unsupported digest algorithm``,
    ``invalid checksum digest length``.
    """
    if not isinstance(s, str) or not _DIGEST_RE.match(s):
        raise InvalidArgument("invalid checksum digest format")
    algorithm, hexpart = s.split(":", 1)
    want = ALGORITHMS.get(algorithm)
    if want is None:
        raise InvalidArgument("unsupported digest algorithm")
    if len(hexpart) != want:
        raise InvalidArgument("invalid checksum digest length")
    if not _HEX_RE.match(hexpart):
        raise InvalidArgument("invalid checksum digest format")
    return s


class Digest(str):
    """A validated digest string with ``.algorithm`` and ``.hex`` parts."""

    def __new__(cls, value: str) -> Digest:
        return super().__new__(cls, validate_digest(value))

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:  # type: ignore[override]
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        """The 12-character short form docker prints as IMAGE ID."""
        return self.hex[:12]

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = SHA256) -> Digest:
        return cls(f"{algorithm}:{_hash(algorithm, data)}")


def split(digest: str) -> tuple[str, str]:
    """``(algorithm, hex)`` of a validated digest."""
    validate_digest(digest)
    a, h = digest.split(":", 1)
    return a, h


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainIDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append(sha256_digest(f"{out[-1]} {d}".encode()))
    return out
