"""The image commands of `tug`, run as a user runs them (subprocess, temporary --root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

TUG = [sys.executable, "-m", "tugboat.cli.main"]


def tug(root, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([*TUG, "--root", str(root), *args], capture_output=True, input=input, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"tug {' '.join(args)} failed: {r.stderr.decode()}")
    return r


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    tug(r, "image", "bootstrap", "busybox")
    return r


def test_images_table_and_formats(root) -> None:
    out = tug(root, "images").stdout.decode().splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert out[0].index("TAG") == 13  # docker's tabwriter: width = longest cell + 3, min 10
    assert out[1].split()[:2] == ["busybox", "latest"]
    iid = out[1].split()[2]
    assert len(iid) == 12
    assert tug(root, "images", "-q").stdout.decode() == iid + "\n"
    assert tug(root, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode() == "busybox:latest\n"
    j = json.loads(tug(root, "images", "--format", "json").stdout)
    assert j["Repository"] == "busybox" and j["ID"] == iid
    assert "DIGEST" in tug(root, "images", "--digests").stdout.decode()
    tug(root, "tag", "busybox", "localhost:5000/bb:v2")
    assert tug(root, "images", "localhost:5000/bb").stdout.decode().splitlines()[1].split()[:2] == \
        ["localhost:5000/bb", "v2"]
    assert tug(root, "images", "--filter", "dangling=true", "-q").stdout == b""
    assert tug(root, "images", "--filter", "reference=busy*", "-q").stdout.decode() == iid + "\n"


def test_inspect_history_rmi(root) -> None:
    doc = json.loads(tug(root, "image", "inspect", "busybox").stdout)
    assert doc[0]["RepoTags"] == ["busybox:latest"] and doc[0]["Config"]["Cmd"] == ["sh"]
    assert doc[0]["RootFS"]["Type"] == "layers"
    assert tug(root, "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", "busybox").stdout == b"linux/amd64\n"
    r = tug(root, "image", "inspect", "nope", check=False)
    assert r.returncode == 1 and b"No such image: nope" in r.stderr and r.stdout == b"[]\n"
    hist = tug(root, "history", "busybox").stdout.decode().splitlines()
    assert hist[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"] and "tug image bootstrap busybox" in hist[1]
    tug(root, "tag", "busybox", "second:1")
    assert tug(root, "rmi", "second:1").stdout == b"Untagged: second:1\n"
    r = tug(root, "rmi", "nothere", check=False)
    assert r.returncode == 1 and b"No such image: nothere:latest" in r.stderr
    out = tug(root, "rmi", "busybox").stdout.decode().splitlines()
    assert out[0] == "Untagged: busybox:latest" and out[1].startswith("Deleted: sha256:")
    assert tug(root, "images", "-q").stdout == b""


def test_rmi_refuses_image_used_by_container(root) -> None:
    iid = json.loads(tug(root, "image", "inspect", "busybox").stdout)[0]["Id"]
    cdir = root / "containers" / "abc123"
    cdir.mkdir(parents=True)
    (cdir / "container.json").write_text(json.dumps({"Id": "abc123", "Image": iid}))
    r = tug(root, "rmi", "busybox", check=False)
    assert r.returncode == 1 and b"container abc123 is using its referenced image" in r.stderr
    tug(root, "rmi", "-f", "busybox")
    assert iid[7:19] in tug(root, "images", "-q").stdout.decode()  # kept for the container, untagged


def test_save_load_import_prune_df(root, tmp_path) -> None:
    arch = tmp_path / "bb.tar"
    tug(root, "save", "-o", str(arch), "busybox")
    with tarfile.open(arch) as tf:
        names = tf.getnames()
    assert "manifest.json" in names and "index.json" in names and "oci-layout" in names
    other = tmp_path / "other"
    assert tug(other, "load", "-i", str(arch)).stdout == b"Loaded image: busybox:latest\n"
    assert tug(other, "load", input=arch.read_bytes()).stdout == b"Loaded image: busybox:latest\n"
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tf:
        ti = tarfile.TarInfo("hello")
        ti.size = 0
        tf.addfile(ti)
    iid = tug(root, "import", "-c", "CMD [\"/hello\"]", str(rootfs), "imp:1").stdout.decode().strip()
    assert iid.startswith("sha256:")
    tug(root, "rmi", "imp:1")
    df = tug(root, "system", "df").stdout.decode().splitlines()
    assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"] and df[1].split()[:2] == ["Images", "1"]
    r = tug(root, "image", "prune", "-f")
    assert r.stdout.decode().endswith("Total reclaimed space: 0B\n")
    assert tug(root, "system", "check").stdout.decode().startswith("store consistent")


def _big_archive(path: str, mb: int = 160) -> None:
    import hashlib
    import io

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        chunk = os.urandom(1 << 20)
        for i in range(mb // 4):
            data = (chunk * 4)[i:] + (chunk * 4)[:i]
            ti = tarfile.TarInfo(f"data/f{i:03d}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    lb = layer.getvalue()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(lb).hexdigest()]}}).encode()
    man = json.dumps([{"Config": "c.json", "RepoTags": ["big:1"], "Layers": ["l.tar"]}]).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in [("manifest.json", man), ("c.json", cfg), ("l.tar", lb)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


@pytest.mark.slow
def test_sigkill_mid_load_leaves_consistent_store(root, tmp_path) -> None:
    arch = str(tmp_path / "big.tar")
    _big_archive(arch)
    for delay in (0.3, 0.8, 1.5):
        p = subprocess.Popen([*TUG, "--root", str(root), "load", "-i", arch], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        r = tug(root, "system", "check", check=False)
        assert r.returncode == 0, r.stdout.decode()
        assert r.stdout.decode().splitlines()[-1].startswith("store consistent")
    tug(root, "system", "check", "--repair")
    check = json.loads(tug(root, "system", "check", "--json").stdout)
    assert check["ok"] and check["garbage"] == []
    assert tug(root, "load", "-i", arch).stdout == b"Loaded image: big:1\n"
    assert json.loads(tug(root, "system", "check", "--json").stdout)["ok"]
    tug(root, "rmi", "big:1")
    tug(root, "image", "prune", "-f")
    assert tug(root, "images", "-q", "--filter", "reference=big").stdout == b""
