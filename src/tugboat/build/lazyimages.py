"""The image store as ``tug build`` sees it, with nothing heavy imported until it is needed.

A fully cached ``tug build`` only reads: the base image (``images/db.json``, then its config and
manifest blobs), the cache records, and whether blobs exist. ``LazyImages`` answers those reads
with the standard library's ``json`` and, for anything else (a reference it does not recognise,
a missing image, a pull, writing blobs, ``create_image``, the snapshotter), loads the real
``tugboat.images.service.ImageService`` and hands the call to it. That keeps msgspec,
``dataclasses`` and the snapshotter (~60 ms of imports) off the cached path. What it reads is
the image store's documented format (``images/store.py``, ``content/store.py``); any surprise in
it is a miss that goes to the real service, never a different answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

# A conservative subset of docker's reference grammar: what it accepts, parse_reference accepts
# with the same meaning; anything else goes to the real parser.
_PATH_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_DOMAIN_RE = re.compile(r"^(?:localhost|[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)*)(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ID_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


def normalize(ref: str) -> str | None:
    """``busybox`` -> ``docker.io/library/busybox:latest`` (docker's normalisation, default tag
    included), for plain ``[domain/]path[:tag]`` references; None for anything else (digests,
    unusual names, invalid ones), which the caller hands to ``tugboat.oci.reference``."""
    if not ref or "@" in ref or len(ref) > 255 or _HEX64_RE.match(ref):
        return None
    i = ref.find("/")
    first = ref[:i] if i != -1 else ""
    if i != -1 and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN_RE.match(first):
            return None
        domain, rest = first, ref[i + 1:]
        if domain == "index.docker.io":
            domain = "docker.io"
    else:
        domain, rest = "docker.io", ref
    name, colon, tag = rest.partition(":")
    if colon and not _TAG_RE.match(tag):
        return None
    if not _PATH_RE.match(name):
        return None
    if domain == "docker.io" and "/" not in name:
        name = "library/" + name
    if len(domain) + 1 + len(name) > 255:
        return None
    return f"{domain}/{name}:{tag or 'latest'}"


def familiar(canonical: str) -> str:
    """``docker.io/library/x:latest`` -> ``x:latest`` (for a string ``normalize`` returned)."""
    if canonical.startswith("docker.io/"):
        rest = canonical[len("docker.io/"):]
        if rest.startswith("library/") and rest.count("/") == 1:
            return rest[len("library/"):]
        return rest
    return canonical


class LiteImage:
    """What the builder reads of an image: ``id``, ``config``, ``manifest``, ``layers`` (diff IDs)."""

    def __init__(self, image_id: str, config: dict[str, Any], manifest: dict[str, Any]) -> None:
        self.id = image_id
        self.config = config
        self.manifest = manifest
        self.layers = list((config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]


class _LiteContent:
    """``exists`` over ``content/blobs/<alg>/<hex>`` (the cache's only question on a hit);
    anything else is the real content store's."""

    def __init__(self, root: str, owner: LazyImages) -> None:
        self.root = root
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._owner.service.content, name)

    def path_for(self, digest: str) -> str:
        alg, _, hexpart = digest.partition(":")
        return os.path.join(self.root, "blobs", alg, hexpart)

    def exists(self, digest: str) -> bool:
        return ":" in digest and "/" not in digest and os.path.isfile(self.path_for(digest))

    def read(self, digest: str) -> bytes:
        with open(self.path_for(digest), "rb") as f:
            return f.read()


class LazyImages:
    """Duck-types ``ImageService`` for the builder; the real one is made on first real need."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.content: Any = _LiteContent(os.path.join(self.root, "content"), self)
        self._svc: Any = None
        self._lease_stacks: list[contextlib.ExitStack] = []
        self._db: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    @property
    def loaded(self) -> bool:
        return self._svc is not None

    @property
    def service(self) -> Any:
        if self._svc is None:
            from tugboat.images.service import ImageService

            self._svc = ImageService(self.root)
            self.content = self._svc.content
            for stack in self._lease_stacks:  # blobs may be written from now on
                stack.enter_context(self._svc.lease())
        return self._svc

    @property
    def snapshots(self) -> Any:
        return self.service.snapshots

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.service, name)

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """The real service's lease, taken when the service is loaded (a cached build that writes
        no blob needs none: a lease only protects blobs newer than itself)."""
        with contextlib.ExitStack() as stack:
            if self._svc is not None:
                stack.enter_context(self._svc.lease())
            self._lease_stacks.append(stack)
            try:
                yield
            finally:
                self._lease_stacks.remove(stack)

    # ---- reads ----------------------------------------------------------------------------

    def _read_db(self) -> dict[str, Any] | None:
        path = os.path.join(self.root, "images", "db.json")
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._db is not None and self._db[0] == key:
                return self._db[1]
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != 1:
            return None
        self._db = (key, data)
        return data

    def _lite(self, ref: str) -> LiteImage | None:
        if self._svc is not None:
            return None
        data = self._read_db()
        if data is None:
            return None
        try:
            images, tags = data["images"], data["tags"]
            if _ID_RE.match(ref):
                image_id = ref if ref in images else None
            else:
                canonical = normalize(ref)
                image_id = tags.get(canonical) if canonical is not None else None
            if image_id is None or image_id not in images:
                return None
            config = json.loads(self.content.read(image_id))
            manifest = json.loads(self.content.read(images[image_id]["manifest"]))
            if not isinstance(config, dict) or not isinstance(manifest, dict):
                return None
            img = LiteImage(image_id, config, manifest)
            if len(manifest.get("layers") or []) != len(img.layers):
                return None
            return img
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def resolve(self, ref_or_id: str) -> Any:
        img = self._lite(ref_or_id)
        return img if img is not None else self.service.resolve(ref_or_id)

    def exists(self, ref_or_id: str) -> bool:
        return self._lite(ref_or_id) is not None or self.service.exists(ref_or_id)
