"""Shared fixtures for the builder's integration tests: a data root with busybox, helpers to build
and to read files out of a built image's layers."""

from __future__ import annotations

import os
import stat
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tugboat.build.builder import Builder
from tugboat.images.bootstrap import bootstrap_busybox
from tugboat.images.service import ImageService


class BuildEnv:
    def __init__(self, root: str) -> None:
        self.root = root
        self.images = ImageService(root)
        self.builder = Builder(self.images)
        self.events: list[dict[str, Any]] = []

    def context(self, tmp: Any, dockerfile: str, files: dict[str, str | bytes] | None = None) -> str:
        d = os.path.join(str(tmp), "ctx")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "Dockerfile"), "w") as f:
            f.write(textwrap.dedent(dockerfile).lstrip())
        for name, content in (files or {}).items():
            p = os.path.join(d, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        return d

    def build(self, ctx: str, **kw: Any) -> Any:
        self.events = []
        return self.builder.build(ctx, progress=self.events.append, **kw)

    def output(self) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == "output")

    def cached_steps(self) -> list[int]:
        return [e["n"] for e in self.events if e["type"] == "cached"]

    def read(self, image: Any, path: str) -> bytes | None:
        """A file's content in the image (top layer first, honouring overlay whiteouts)."""
        entry = self.lookup(image, path)
        if entry is None:
            return None
        with open(entry, "rb") as f:
            return f.read()

    def lookup(self, image: Any, path: str) -> str | None:
        rel = path.strip("/")
        sn = self.images.snapshots
        for cid in reversed(image.chain_ids):
            fs = sn.layer_fs(cid)
            p = os.path.join(fs, rel)
            if os.path.lexists(p):
                st = os.lstat(p)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None
                return p
            # an opaque or whiteout parent hides everything below
            parts = rel.split("/")
            for i in range(1, len(parts)):
                q = os.path.join(fs, *parts[:i])
                if os.path.lexists(q):
                    st = os.lstat(q)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        return None
        return None


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = str(tmp_path_factory.mktemp("buildroot"))
    svc = ImageService(root)
    bootstrap_busybox(svc)
    yield root
    _cleanup_root(root)


def _cleanup_root(root: str) -> None:
    from tugboat.snapshots.mount import MNT_DETACH, umount

    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(root)]
    for p in sorted(points, reverse=True):
        try:
            umount(p, MNT_DETACH)
        except OSError:
            pass


@pytest.fixture
def env(busybox_root: str) -> BuildEnv:
    return BuildEnv(busybox_root)
