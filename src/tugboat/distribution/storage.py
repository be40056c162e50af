"""On-disk state of the registry server.

Layout under the registry root (``tug registry serve --root DIR``)::

    content/blobs/<alg>/<hex>          every blob and manifest, stored once for all repositories
                                       (the ContentStore layout of tugboat.content)
    uploads/<uuid>                     uploads in progress (bytes so far)
    uploads/<uuid>.json                the upload's repository and start time
    repositories/<name>/_layers/<alg>/<hex>                     blob linked into the repository
    repositories/<name>/_manifests/revisions/<alg>/<hex>        manifest in the repository
                                                                (file content: its media type)
    repositories/<name>/_manifests/tags/<tag>                   tag -> manifest digest
    repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>      subject -> referrer descriptor (JSON)

Blobs are verified while they stream in, then renamed into place (fsync first), so a crash or a
dropped connection never leaves bytes under a digest they do not hash to. Deleting a blob or a
manifest only unlinks it from the repository; ``tug registry gc`` removes bytes nothing refers to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass

from tugboat.content.store import ContentStore
from tugboat.errors import InvalidArgument
from tugboat.util.fs import write_atomic

ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


class DigestError(InvalidArgument):
    """A malformed digest (DIGEST_INVALID) or an unsupported algorithm (UNSUPPORTED)."""

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def parse_digest(digest: str) -> tuple[str, str]:
    """Split and check ``alg:hex``; raise DigestError for anything we cannot verify."""
    if not _DIGEST_RE.match(digest):
        raise DigestError(f"invalid digest {digest!r}")
    alg, hexpart = digest.split(":", 1)
    if alg not in ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {alg!r}", unsupported=True)
    if len(hexpart) != ALGORITHMS[alg] or not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise DigestError(f"invalid {alg} digest {digest!r}")
    return alg, hexpart


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def valid_name(name: str) -> bool:
    return len(name) <= 255 and bool(NAME_RE.match(name))


def _atomic_write(path: str, data: bytes, *, sync: bool = True) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, data, mode=0o600, sync=sync)


@dataclass
class Upload:
    """One blob upload in progress: the bytes so far live in ``path``."""

    id: str
    name: str
    path: str
    offset: int
    hasher: hashlib._Hash | None  # sha256 of the bytes so far; None when it must be recomputed
    started: float


class RegistryStorage:
    """The registry's blobs, uploads and repository metadata (synchronous; call from executors)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.blob_root = self.content.blobs_dir
        self.ingest_root = os.path.join(self.root, "uploads")
        self.repo_root = os.path.join(self.root, "repositories")
        for d in (self.blob_root, self.ingest_root, self.repo_root):
            os.makedirs(d, exist_ok=True)
        self.uploads: dict[str, Upload] = {}

    # ---- blobs (shared by all repositories) ----
    def blob_path(self, digest: str) -> str:
        alg, hexpart = parse_digest(digest)
        return os.path.join(self.blob_root, alg, hexpart)

    def blob_exists(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def blob_size(self, digest: str) -> int:
        return os.stat(self.blob_path(digest)).st_size

    def read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        alg = parse_digest(digest)[0] if digest else "sha256"
        actual = digest_of(data, alg)
        if digest and actual != digest:
            raise DigestError(f"digest mismatch: content hashes to {actual}, not {digest}")
        if not self.content.exists(actual):
            self.content.put(data, actual)
        return actual

    def commit_file(self, tmp_path: str, digest: str) -> None:
        """Move a verified file into place under its digest (fsync, rename)."""
        path = self.blob_path(digest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_path, 0o444)
        os.rename(tmp_path, path)

    def delete_blob_bytes(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except FileNotFoundError:
            pass

    def list_blobs(self) -> Iterator[str]:
        for alg in ALGORITHMS:
            d = os.path.join(self.blob_root, alg)
            if os.path.isdir(d):
                for h in os.listdir(d):
                    if not h.startswith("."):
                        yield f"{alg}:{h}"

    # ---- uploads ----
    def new_upload(self, name: str) -> Upload:
        uid = str(uuidlib.uuid4())
        path = os.path.join(self.ingest_root, uid)
        with open(path, "wb"):
            pass
        _atomic_write(path + ".json", json.dumps({"name": name, "started": time.time()}).encode(), sync=False)
        up = Upload(uid, name, path, 0, hashlib.sha256(), time.time())
        self.uploads[uid] = up
        return up

    def get_upload(self, name: str, uid: str) -> Upload | None:
        up = self.uploads.get(uid)
        if up is None:
            # an upload started before a restart: rebuild its state from the ingest area
            if not re.fullmatch(r"[0-9a-f-]{36}", uid):
                return None
            meta = os.path.join(self.ingest_root, uid + ".json")
            path = os.path.join(self.ingest_root, uid)
            try:
                with open(meta, "rb") as f:
                    info = json.load(f)
                size = os.stat(path).st_size
            except (OSError, ValueError):
                return None
            up = Upload(uid, info["name"], path, size, None, info.get("started", 0.0))
            self.uploads[uid] = up
        if up.name != name:
            return None
        return up

    def upload_hasher(self, up: Upload) -> hashlib._Hash:
        if up.hasher is None:
            h = hashlib.sha256()
            with open(up.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            up.hasher = h
        return up.hasher

    def file_digest(self, path: str, alg: str) -> str:
        h = hashlib.new(alg)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"{alg}:{h.hexdigest()}"

    def drop_upload(self, up: Upload) -> None:
        self.uploads.pop(up.id, None)
        for p in (up.path, up.path + ".json"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def finish_upload(self, up: Upload, digest: str) -> None:
        """Verify the upload against ``digest`` and commit it; raise DigestError on mismatch."""
        alg, _ = parse_digest(digest)
        if alg == "sha256":
            actual = "sha256:" + self.upload_hasher(up).hexdigest()
        else:
            actual = self.file_digest(up.path, alg)
        if actual != digest:
            self.drop_upload(up)
            raise DigestError(f"digest mismatch: uploaded content hashes to {actual}, not {digest}")
        self.uploads.pop(up.id, None)
        if os.path.exists(self.blob_path(digest)):
            os.unlink(up.path)
        else:
            self.commit_file(up.path, digest)
        try:
            os.unlink(up.path + ".json")
        except FileNotFoundError:
            pass
        self.link_blob(up.name, digest)

    # ---- repositories ----
    def _repo(self, name: str, *parts: str) -> str:
        return os.path.join(self.repo_root, name, *parts)

    def repo_exists(self, name: str) -> bool:
        return os.path.isdir(self._repo(name, "_manifests")) or os.path.isdir(self._repo(name, "_layers"))

    def _link_path(self, name: str, kind: str, digest: str) -> str:
        alg, hexpart = parse_digest(digest)
        return self._repo(name, kind, alg, hexpart)

    def link_blob(self, name: str, digest: str) -> None:
        p = self._link_path(name, "_layers", digest)
        if not os.path.exists(p):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb"):
                pass

    def blob_linked(self, name: str, digest: str) -> bool:
        return os.path.exists(self._link_path(name, "_layers", digest)) and self.blob_exists(digest)

    def unlink_blob(self, name: str, digest: str) -> bool:
        try:
            os.unlink(self._link_path(name, "_layers", digest))
            return True
        except FileNotFoundError:
            return False

    def repo_blob_links(self, name: str) -> Iterator[str]:
        base = self._repo(name, "_layers")
        for alg in ALGORITHMS:
            d = os.path.join(base, alg)
            if os.path.isdir(d):
                for h in os.listdir(d):
                    yield f"{alg}:{h}"

    # manifests
    def manifest_media_type(self, name: str, digest: str) -> str | None:
        try:
            with open(self._link_path(name, "_manifests/revisions", digest), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put_manifest(self, name: str, data: bytes, digest: str, media_type: str) -> None:
        if not self.content.exists(digest):
            self.content.put(data, digest)
        _atomic_write(self._link_path(name, "_manifests/revisions", digest), media_type.encode(), sync=False)

    def list_manifests(self, name: str) -> Iterator[str]:
        base = self._repo(name, "_manifests", "revisions")
        for alg in ALGORITHMS:
            d = os.path.join(base, alg)
            if os.path.isdir(d):
                for h in os.listdir(d):
                    if not h.startswith("."):
                        yield f"{alg}:{h}"

    def delete_manifest(self, name: str, digest: str) -> bool:
        try:
            os.unlink(self._link_path(name, "_manifests/revisions", digest))
        except FileNotFoundError:
            return False
        for tag in self.list_tags(name):
            if self.resolve_tag(name, tag) == digest:
                self.delete_tag(name, tag)
        # drop it from any subject's referrers list
        alg, hexpart = parse_digest(digest)
        ref_root = self._repo(name, "_referrers")
        if os.path.isdir(ref_root):
            for dirpath, _dirs, files in os.walk(ref_root):
                if f"{alg}-{hexpart}" in files:
                    os.unlink(os.path.join(dirpath, f"{alg}-{hexpart}"))
        return True

    # tags
    def tag(self, name: str, tag: str, digest: str) -> None:
        _atomic_write(self._repo(name, "_manifests", "tags", tag), digest.encode(), sync=False)

    def resolve_tag(self, name: str, tag: str) -> str | None:
        try:
            with open(self._repo(name, "_manifests", "tags", tag), encoding="utf-8") as f:
                return f.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete_tag(self, name: str, tag: str) -> bool:
        try:
            os.unlink(self._repo(name, "_manifests", "tags", tag))
            return True
        except FileNotFoundError:
            return False

    def list_tags(self, name: str) -> list[str]:
        try:
            return sorted(t for t in os.listdir(self._repo(name, "_manifests", "tags")) if not t.startswith(".tmp-"))
        except FileNotFoundError:
            return []

    # referrers
    def add_referrer(self, name: str, subject: str, digest: str, descriptor: dict) -> None:
        salg, shex = parse_digest(subject)
        alg, hexpart = parse_digest(digest)
        _atomic_write(
            self._repo(name, "_referrers", salg, shex, f"{alg}-{hexpart}"), json.dumps(descriptor).encode(), sync=False
        )

    def referrers(self, name: str, subject: str) -> list[dict]:
        salg, shex = parse_digest(subject)
        d = self._repo(name, "_referrers", salg, shex)
        out = []
        try:
            entries = sorted(os.listdir(d))
        except FileNotFoundError:
            return []
        for e in entries:
            if e.startswith(".tmp-"):
                continue
            try:
                with open(os.path.join(d, e), "rb") as f:
                    out.append(json.loads(f.read()))
            except (OSError, ValueError):
                continue
        return out

    def catalog(self) -> list[str]:
        return [r for r in self.list_repos() if any(True for _ in self.list_manifests(r))]

    def list_repos(self) -> list[str]:
        names = []
        for dirpath, dirs, _files in os.walk(self.repo_root):
            if "_manifests" in dirs or "_layers" in dirs:
                names.append(os.path.relpath(dirpath, self.repo_root))
            dirs[:] = [x for x in dirs if not x.startswith("_")]
        return sorted(names)

    # ---- garbage collection ----
    def gc(self, *, dry_run: bool = False, grace_seconds: float = 0.0, uploads_older_than: float = 86400.0) -> dict:
        """Remove blobs no manifest refers to and stale uploads; return what was (or would be) removed.

        Run it while nothing is pushing (as distribution's garbage-collect asks): a blob uploaded
        for a manifest not yet pushed looks unreferenced. ``grace_seconds`` spares younger blobs.
        """
        from tugboat.distribution.manifest import references

        marked: set[str] = set()
        for repo in self.list_repos():
            for m in self.list_manifests(repo):
                marked.add(m)
                try:
                    doc = json.loads(self.read_blob(m))
                except (OSError, ValueError):
                    continue
                marked.update(references(doc))
        now = time.time()
        removed: list[str] = []
        freed = 0
        for d in list(self.list_blobs()):
            if d in marked:
                continue
            p = self.blob_path(d)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < grace_seconds:
                continue
            removed.append(d)
            freed += st.st_size
            if not dry_run:
                os.unlink(p)
        if not dry_run:
            for repo in self.list_repos():
                for d in list(self.repo_blob_links(repo)):
                    if not self.blob_exists(d):
                        self.unlink_blob(repo, d)
            for entry in os.listdir(self.ingest_root):
                p = os.path.join(self.ingest_root, entry)
                try:
                    if now - os.stat(p).st_mtime > uploads_older_than:
                        if os.path.isdir(p):
                            shutil.rmtree(p)
                        else:
                            os.unlink(p)
                except FileNotFoundError:
                    pass
        return {"removed": removed, "freed_bytes": freed, "kept": len(marked)}
