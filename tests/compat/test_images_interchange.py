"""Interchange with the real skopeo and umoci from Debian, both ways."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import require_binary
from tugboat.images.bootstrap import bootstrap_busybox
from tugboat.images.service import ImageService


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return r.stdout


@pytest.fixture
def svc(tmp_path) -> ImageService:
    s = ImageService(str(tmp_path / "root"))
    bootstrap_busybox(s, "busybox")
    return s


def _has_busybox(s: ImageService, ref: str) -> None:
    img = s.resolve(ref)
    lowers = s.snapshots.ensure_layers(img)
    assert any(os.path.exists(os.path.join(d, "bin/busybox")) for d in lowers)


def test_tug_save_skopeo_copy_tug_load(tmp_path, svc) -> None:
    skopeo = require_binary("skopeo")
    arch = str(tmp_path / "bb.tar")
    svc.save(["busybox"], arch)
    oci_dir = str(tmp_path / "oci")
    run(skopeo, "copy", f"docker-archive:{arch}", f"oci:{oci_dir}:bbcopy")
    run(skopeo, "copy", f"docker-archive:{arch}", f"docker-archive:{tmp_path}/sk.tar:sk/bb:1")
    insp = json.loads(run(skopeo, "inspect", "--raw", f"oci-archive:{arch}"))  # docker 25 archives are OCI too
    assert insp["schemaVersion"] == 2
    other = ImageService(str(tmp_path / "other"))
    assert other.load(oci_dir) == ["bbcopy:latest"]
    _has_busybox(other, "bbcopy")
    assert other.load(f"{tmp_path}/sk.tar") == ["sk/bb:1"]
    _has_busybox(other, "sk/bb:1")
    assert other.resolve("sk/bb:1").layers == svc.resolve("busybox").layers


def test_tug_oci_archive_to_umoci_unpack(tmp_path, svc) -> None:
    skopeo = require_binary("skopeo")
    umoci = require_binary("umoci")
    arch = str(tmp_path / "bb-oci.tar")
    svc.save(["busybox"], arch, "oci-archive")
    layout = str(tmp_path / "layout")
    run(skopeo, "copy", f"oci-archive:{arch}", f"oci:{layout}:bb")
    bundle = str(tmp_path / "bundle")
    run(umoci, "unpack", "--image", f"{layout}:bb", bundle)
    assert os.path.islink(os.path.join(bundle, "rootfs/bin/sh"))
    # and a layout tug writes itself is directly usable by umoci
    own = str(tmp_path / "own")
    svc.save(["busybox"], own, "oci")
    run(umoci, "unpack", "--image", f"{own}:latest", str(tmp_path / "bundle2"))
    assert os.path.exists(os.path.join(tmp_path, "bundle2/rootfs/bin/busybox"))


def test_umoci_built_image_loads_into_tug(tmp_path, svc) -> None:
    umoci = require_binary("umoci")
    layout = str(tmp_path / "umoci")
    own = str(tmp_path / "own")
    svc.save(["busybox"], own, "oci")
    run(umoci, "unpack", "--image", f"{own}:latest", str(tmp_path / "b"))
    with open(tmp_path / "b/rootfs/etc/added-by-umoci", "w") as f:
        f.write("hello from umoci\n")
    os.unlink(tmp_path / "b/rootfs/bin/ls")
    run(umoci, "repack", "--image", f"{own}:v2", str(tmp_path / "b"))
    run(umoci, "config", "--image", f"{own}:v2", "--config.cmd", "/bin/true")
    # copy to a fresh layout to prove plain umoci layouts load too
    os.rename(own, layout)
    other = ImageService(str(tmp_path / "other"))
    loaded = other.load(layout)
    assert "v2:latest" in loaded or any("v2" in x for x in loaded)
    img = other.resolve("v2")
    assert img.config["config"]["Cmd"] == ["/bin/true"]
    lowers = other.snapshots.ensure_layers(img)
    with open(os.path.join(lowers[0], "etc/added-by-umoci")) as f:
        assert f.read() == "hello from umoci\n"
    wh = os.lstat(os.path.join(lowers[0], "bin/ls"))
    assert wh.st_rdev == 0 and (wh.st_mode & 0o170000) == 0o020000  # overlay whiteout
