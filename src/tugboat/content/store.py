"""Content-addressed blob store: ``content/blobs/<alg>/<hex>``, written through ``content/ingest/``.

Every write goes to a fresh file in the ingest area, is hashed while written, checked against the
expected size and digest, fsynced, then renamed into place. A crash at any point leaves at most
an orphan ingest file (``cleanup_ingest`` / ``tug system check --repair`` removes it), never a
wrong blob under a real digest. Renames are atomic, so concurrent writers of the same blob (even
in different processes) are safe: the last rename wins with identical bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

from tugboat.errors import DataCorruption, InvalidArgument, NotFound
from tugboat.oci.digest import ALGORITHMS, SHA256, new_hasher, validate_digest
from tugboat.util.proc import pid_alive

CHUNK = 1 << 20


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Streams bytes into the ingest area; ``commit()`` verifies and moves the blob into place."""

    def __init__(
        self,
        store: ContentStore,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        algorithm: str | None = None,
    ) -> None:
        if expected_digest is not None:
            validate_digest(expected_digest)
            algorithm = expected_digest.split(":", 1)[0]
        self.algorithm = algorithm or SHA256
        self.store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self._hasher = new_hasher(self.algorithm)
        self.size = 0
        os.makedirs(store.ingest_dir, exist_ok=True)
        self.tmp_path = os.path.join(store.ingest_dir, f"{os.getpid()}-{uuid.uuid4().hex}")
        self._fd: int | None = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.digest: str | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._fd is None:
            raise InvalidArgument("blob writer is closed")
        n = len(data)
        if self.expected_size is not None and self.size + n > self.expected_size:
            raise DataCorruption(
                f"size mismatch: got more than the expected {self.expected_size} bytes"
            )
        self._hasher.update(data)
        mv = memoryview(data)
        while mv:
            w = os.write(self._fd, mv)
            mv = mv[w:]
        self.size += n
        return n

    def copy_from(self, f: IO[bytes], limit: int | None = None) -> None:
        """Write everything (or ``limit`` bytes) read from a binary file object."""
        left = limit
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            self.write(chunk)
            if left is not None:
                left -= len(chunk)

    def commit(self) -> str:
        """Verify size and digest, fsync and atomically rename into place; returns the digest."""
        if self._fd is None:
            if self.digest is not None:
                return self.digest
            raise InvalidArgument("blob writer is closed")
        try:
            got = f"{self.algorithm}:{self._hasher.hexdigest()}"
            if self.expected_size is not None and self.size != self.expected_size:
                raise DataCorruption(
                    f"size mismatch for {self.expected_digest or got}: expected {self.expected_size} bytes, got {self.size}"
                )
            if self.expected_digest is not None and got != self.expected_digest:
                raise DataCorruption(f"digest mismatch: expected {self.expected_digest}, got {got}")
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            final = self.store.path_for(got)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.chmod(self.tmp_path, 0o444)
            existed = os.path.exists(final)
            os.rename(self.tmp_path, final)
            if not existed:
                self.store._note_new(got)
            _fsync_dir(os.path.dirname(final))
            self.digest = got
            return got
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or self.digest is None:
            self.abort()


class ContentStore:
    """Blobs by digest under ``root_dir`` (``<data root>/content``)."""

    def __init__(self, root_dir: str) -> None:
        self.root = os.path.abspath(root_dir)
        self.blobs_dir = os.path.join(self.root, "blobs")
        self.ingest_dir = os.path.join(self.root, "ingest")
        self._local = threading.local()

    def _note_new(self, digest: str) -> None:
        journal = getattr(self._local, "journal", None)
        if journal is not None:
            journal.append(digest)

    @contextlib.contextmanager
    def journal(self) -> Iterator[list[str]]:
        """Collect the digests of blobs this thread adds (for rolling back a failed operation)."""
        prev = getattr(self._local, "journal", None)
        mine: list[str] = []
        self._local.journal = mine
        try:
            yield mine
        finally:
            self._local.journal = prev
            if prev is not None:
                prev.extend(mine)

    def path_for(self, digest: str) -> str:
        validate_digest(digest)
        alg, hexpart = digest.split(":", 1)
        return os.path.join(self.blobs_dir, alg, hexpart)

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path_for(digest))

    def path(self, digest: str) -> str:
        """A readable file path of the blob (``NotFound`` if absent)."""
        p = self.path_for(digest)
        if not os.path.exists(p):
            raise NotFound(f"content {digest}: not found")
        return p

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path_for(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def open(self, digest: str) -> IO[bytes]:
        try:
            return open(self.path_for(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(
        self,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        algorithm: str | None = None,
    ) -> BlobWriter:
        return BlobWriter(self, expected_digest, expected_size, algorithm)

    def put(self, data: bytes, expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Store ``data``; returns its digest. Already-present blobs are not rewritten."""
        if expected_digest is not None and expected_size in (None, len(data)):
            alg = validate_digest(expected_digest).split(":", 1)[0]
            h = new_hasher(alg)
            h.update(data)
            if f"{alg}:{h.hexdigest()}" == expected_digest and self.exists(expected_digest):
                return expected_digest
        with self.writer(expected_digest, expected_size) as w:
            w.write(data)
            return w.commit()

    def ingest(self, f: IO[bytes], expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Store everything read from ``f``; returns the digest."""
        if (
            expected_digest is not None
            and self.exists(expected_digest)
            and (expected_size is None or self.size(expected_digest) == expected_size)
        ):
            return expected_digest
        with self.writer(expected_digest, expected_size) as w:
            w.copy_from(f)
            return w.commit()

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path_for(digest))
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def list(self) -> Iterator[str]:
        for alg in sorted(ALGORITHMS):
            d = os.path.join(self.blobs_dir, alg)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in sorted(names):
                yield f"{alg}:{name}"

    def total_size(self) -> int:
        total = 0
        for d in self.list():
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(self.path_for(d)).st_size
        return total

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob; True when its content matches its name."""
        alg = digest.split(":", 1)[0]
        h = new_hasher(alg)
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return f"{alg}:{h.hexdigest()}" == digest

    def ingest_leftovers(self, older_than: float = 0.0) -> list[str]:
        """Ingest files older than ``older_than`` seconds (crashed or running writers)."""
        out = []
        now = time.time()
        try:
            names = os.listdir(self.ingest_dir)
        except FileNotFoundError:
            return []
        for name in names:
            p = os.path.join(self.ingest_dir, name)
            with contextlib.suppress(FileNotFoundError):
                if now - os.stat(p).st_mtime >= older_than:
                    out.append(p)
        return out

    def cleanup_ingest(self, older_than: float = 3600.0) -> int:
        """Remove ingest leftovers whose writer process is gone (or older than ``older_than``)."""
        n = 0
        for p in self.ingest_leftovers(0.0):
            pid_s = os.path.basename(p).split("-", 1)[0]
            alive = pid_s.isdigit() and pid_alive(int(pid_s))
            try:
                age = time.time() - os.stat(p).st_mtime
            except FileNotFoundError:
                continue
            if not alive or age >= older_than:
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
                n += 1
        return n
