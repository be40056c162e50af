"""Shared fixtures for the runtime's integration tests: a busybox bundle, a static probe, cleanup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tugboat.runtime.api import Runtime
from tugboat.runtime.spec import default_spec

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"


def build_rootfs(dest: str, probe: str | None = None) -> str:
    """A minimal rootfs: static busybox with every applet linked, /etc files, the probe."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(dest, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    if probe:
        shutil.copy2(probe, os.path.join(dest, "bin", "probe"))
    return dest


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the in-container probe")
    out = str(tmp_path_factory.mktemp("probe") / "probe")
    subprocess.run([gcc, "-O2", "-static", "-o", out, os.path.join(HERE, "runtime_probe.c")], check=True)
    return out


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory, probe_binary: str) -> str:
    return build_rootfs(str(tmp_path_factory.mktemp("rootfs") / "rootfs"), probe_binary)


class Bundles:
    def __init__(self, base: str, template: str) -> None:
        self.base = base
        self.template = template
        self.n = 0

    def make(self, args: list[str], *, edit: Any = None, copy_rootfs: bool = False) -> str:
        """A bundle dir with config.json from default_spec(args); ``edit(config)`` may change it."""
        self.n += 1
        bundle = os.path.join(self.base, f"bundle{self.n}")
        os.makedirs(bundle)
        rootfs = os.path.join(bundle, "rootfs")
        if copy_rootfs:
            shutil.copytree(self.template, rootfs, symlinks=True)
        else:
            os.symlink(self.template, rootfs)
        config = default_spec(args)
        config["process"]["terminal"] = False
        config["hostname"] = "tugtest"
        if edit is not None:
            edit(config)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        return bundle


@pytest.fixture
def bundles(tmp_path: Any, rootfs_template: str) -> Bundles:
    return Bundles(str(tmp_path), rootfs_template)


def _cgroup_dirs(parent: str) -> list[str]:
    out = []
    for mnt in sorted(os.listdir("/sys/fs/cgroup")):
        d = os.path.join("/sys/fs/cgroup", mnt, parent.lstrip("/"))
        if os.path.isdir(d):
            out.append(d)
    return out


@pytest.fixture
def runtime(tmp_path: Any) -> Iterator[Runtime]:
    """A Runtime on a temporary root, with its own cgroup parent; everything removed afterwards."""
    parent = f"/tugboat-test-{uuid.uuid4().hex[:8]}"
    rt = Runtime(str(tmp_path / "state"), cgroup_parent=parent, warn=lambda m: None)
    yield rt
    for st in rt.list():
        try:
            rt.delete(st["id"], force=True)
        except Exception:
            pass
    for d in _cgroup_dirs(parent):
        for sub in sorted((os.path.join(r, x) for r, ds, _ in os.walk(d) for x in ds), key=len, reverse=True):
            try:
                os.rmdir(sub)
            except OSError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass


def run_capture(rt: Runtime, bundle: str, cid: str | None = None, timeout: float = 30) -> tuple[int, str]:
    """Run a container to completion; (exit status, stdout+stderr)."""
    cid = cid or f"t-{uuid.uuid4().hex[:8]}"
    out_path = os.path.join(bundle, "out.txt")
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        rt.create(cid, bundle, stdin=None, stdout=fd, stderr=fd)
    finally:
        os.close(fd)
    try:
        rt.start(cid)
        code = rt.wait(cid, timeout=timeout)
    finally:
        rt.delete(cid, force=True)
    with open(out_path) as f:
        return code, f.read()
