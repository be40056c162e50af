"""The build cache: one record per build step, keyed by the parent state and the step.

``<root>/build/cache/<key hex>.json`` holds the complete state after the step: the OCI image
config (history and rootfs included) and the layer blobs. A step's key is
``sha256(parent key, canonical instruction text [, content digest of COPY/ADD sources])``; the
first parent is the base image ID (or ``scratch``). Records are written atomically after the step
succeeded, so a failed or killed step never leaves a record behind (the cache is never poisoned).
A record any of whose layer blobs has left the content store (image GC) is a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import msgspec

from tugboat.oci.image import LayerBlob
from tugboat.util.fs import write_atomic


def step_key(parent: str, *parts: str) -> str:
    h = hashlib.sha256()
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
                rec = msgspec.json.decode(f.read())
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        try:
            state = State.from_record(rec)
        except (KeyError, TypeError):
            return None
        if self.content is not None and not all(self.content.exists(lb.digest) for lb in state.layers):
            return None  # a blob was garbage-collected: rebuild the step
        return state

    def put(self, state: State) -> None:
        os.makedirs(self.root, exist_ok=True)
        write_atomic(self._path(state.key), msgspec.json.encode(state.to_record()))

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
