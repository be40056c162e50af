"""The build cache: one record per build step, keyed by the parent state and the step.

``<root>/build/cache/<key hex>.json`` holds the complete state after the step: the OCI image
config (history and rootfs included) and the layer blobs. A step's key is
``sha256(parent key, canonical instruction text [, content digest of COPY/ADD sources])``; the
first parent is the base image ID (or ``scratch``). Records are written atomically after the step
succeeded, so a failed or killed step never leaves a record behind (the cache is never poisoned).
A record any of whose layer blobs has left the content store (image GC) is a miss.

Only the standard library is imported here (``json``, not msgspec): a fully cached ``tug build``
reads these records and nothing else, and its start-up time is mostly imports.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NamedTuple

from tugboat.util.fs import write_atomic

try:  # CPython's own SHA-256: importing hashlib loads OpenSSL (~3 ms of a cached build's start-up)
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other interpreters
    from hashlib import sha256


class LayerBlob(NamedTuple):
    """A layer blob: the same fields, in the same order, as ``tugboat.oci.image.LayerBlob`` (which
    imports msgspec); the two are interchangeable (both are tuples read by attribute name)."""

    digest: str
    media_type: str
    diff_id: str
    size: int


def step_key(parent: str, *parts: str) -> str:
    h = sha256()
    h.update(parent.encode())
    for p in parts:
        h.update(b"\0")
        h.update(p.encode())
    return "sha256:" + h.hexdigest()


class State:
    """A build state: what an image would be after some step."""

    def __init__(self, key: str, config: dict[str, Any], layers: list[LayerBlob]) -> None:
        self.key = key
        self.config = config
        self.layers = layers

    def to_record(self) -> dict[str, Any]:
        return {"key": self.key, "config": self.config, "layers": [list(lb) for lb in self.layers]}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> State:
        return cls(rec["key"], rec["config"], [LayerBlob(*lb) for lb in rec["layers"]])


class BuildCache:
    def __init__(self, root_dir: str, content: Any = None) -> None:
        self.root = root_dir
        self.content = content

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key.split(":", 1)[-1] + ".json")

    def get(self, key: str) -> State | None:
        try:
            with open(self._path(key), "rb") as f:
                rec = json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        try:
            state = State.from_record(rec)
        except (KeyError, TypeError, ValueError):
            return None
        if self.content is not None and not all(self.content.exists(lb.digest) for lb in state.layers):
            return None  # a blob was garbage-collected: rebuild the step
        return state

    def put(self, state: State) -> None:
        os.makedirs(self.root, exist_ok=True)
        write_atomic(self._path(state.key),
                     json.dumps(state.to_record(), separators=(",", ":")).encode())

    def clear(self) -> int:
        n = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.root):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, name))
                    n += 1
        return n

    def count(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.root) if n.endswith(".json"))
        except FileNotFoundError:
            return 0
