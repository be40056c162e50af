"""The image records: names -> image IDs -> manifests, in one JSON file written atomically.

``<root>/images/db.json``::

    {"version": 1,
     "images": {"sha256:<config>": {"manifest": "sha256:…", "index": "sha256:…" | null,
                                    "added": "<RFC 3339>", "repo_digests": ["docker.io/x@sha256:…"],
                                    "size": <unpacked bytes>}},
     "tags": {"docker.io/library/busybox:latest": "sha256:<config>"}}

Readers take no lock (the file is replaced by rename, so they see one version or the other);
writers hold an exclusive ``flock`` on ``<root>/images/lock`` for read-modify-write, so several
processes (the daemon, CLI commands on the same root) can change it side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

import msgspec

EMPTY: dict[str, Any] = {"version": 1, "images": {}, "tags": {}}


class ImageDB:
    def __init__(self, root_dir: str) -> None:
        self.root = os.path.abspath(root_dir)
        self.path = os.path.join(self.root, "db.json")
        self.lock_path = os.path.join(self.root, "lock")
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def read(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {"version": 1, "images": {}, "tags": {}}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with open(self.path, "rb") as f:
            data = msgspec.json.decode(f.read())
        self._cache = (key, data)
        return data

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write: mutate the yielded dict; it is written on clean exit."""
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None
            cur = self.read()
            data = msgspec.json.decode(msgspec.json.encode(cur))  # a private copy
            yield data
            tmp = f"{self.path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(data), indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._cache = None
        finally:
            os.close(fd)
