"""The snapshotter's shared init layer: the mount points a container gets (/etc/hosts, bind mount
targets) that its image lacks come from one read-only lower dir per (image, set of mount points)
instead of being created in every container's upper dir; what the image has (files, symlinks,
whited-out or opaque paths) is never shadowed."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tugboat.snapshots.overlay import Snapshotter, _init_plan


def _layers(tmp_path: Path) -> tuple[str, str]:
    """Two lower dirs (top, bottom) with a symlink, an odd-mode dir, a whiteout, an opaque dir."""
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for d in ("etc", "var", "opt/data", "srv"):
        (bottom / d).mkdir(parents=True)
    (bottom / "etc" / "hosts").write_text("image hosts\n")
    os.chmod(bottom / "var", 0o750)
    os.chown(bottom / "var", 12, 34)
    os.utime(bottom / "var", (1_000_000, 1_000_000))
    (bottom / "run").mkdir()
    (top / "var").mkdir(parents=True)
    os.chmod(top / "var", 0o710)
    os.chown(top / "var", 56, 78)
    (top / "var" / "run").symlink_to("/run")  # as Debian: /var/run -> /run
    os.utime(top / "var", (2_000_000, 2_000_000))
    (top / "opt").mkdir()
    os.mknod(top / "opt" / "data", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # whiteout
    (bottom / "srv" / "old").mkdir()
    (top / "srv").mkdir()
    os.setxattr(top / "srv", "trusted.overlay.opaque", b"y")
    return str(top), str(bottom)


def test_plan_adds_only_what_the_image_lacks(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (whiteouts, trusted xattrs)")
    lowers = list(_layers(tmp_path))
    want = sorted([
        ("/etc/hosts", False), ("/etc/resolv.conf", False),  # image has hosts: only resolv.conf
        ("/var/run/secrets/token", True),  # under a symlink: left to the runtime
        ("/var/lib/app", True),  # var exists (top layer's attributes), lib and app are new
        ("/opt/data/x", True),  # whited out: opt/data is new here
        ("/srv/old", True),  # hidden by the opaque srv: new
        ("/run", True),  # exists
    ])
    plan = {rel: (kind, st) for rel, kind, st in _init_plan(lowers, want)}
    assert set(plan) == {"etc", "etc/resolv.conf", "var", "var/lib", "var/lib/app",
                         "opt", "opt/data", "opt/data/x", "srv", "srv/old"}
    assert plan["etc/resolv.conf"] == ("file", None)
    kind, st = plan["var"]
    assert kind == "dir" and st is not None and (st.st_uid, st.st_mode & 0o7777) == (56, 0o710)
    assert plan["opt/data"][0] == "dir" and plan["opt/data"][1] is None
    assert plan["srv/old"] == ("dir", None)
    order = [rel for rel, _k, _s in _init_plan(lowers, want)]
    assert order.index("var") < order.index("var/lib") < order.index("var/lib/app")


def test_prepare_puts_the_init_layer_on_top_and_shares_it(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top, bottom = _layers(tmp_path)
    snaps = Snapshotter(str(tmp_path / "snapshots"))
    image = SimpleNamespace(id="sha256:" + "1" * 64, manifest={"layers": []}, layers=[], chain_ids=[])
    snaps.ensure_layers = lambda _image: [top, bottom]  # type: ignore[method-assign]
    mps = [("/etc/hosts", False), ("/etc/resolv.conf", False), ("/var/lib/app", True)]
    a = snaps.prepare("a", image, mountpoints=mps)
    b = snaps.prepare("b", image, mountpoints=list(reversed(mps)))
    init = a.lowerdirs[0]
    assert a.lowerdirs == [init, top, bottom] and b.lowerdirs == a.lowerdirs  # one, shared
    assert os.path.isfile(os.path.join(init, "etc", "resolv.conf"))
    assert not os.path.exists(os.path.join(init, "etc", "hosts"))  # the image's stays visible
    st = os.lstat(os.path.join(init, "var"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, int(st.st_mtime)) == (56, 78, 0o710, 2_000_000)
    assert os.path.isdir(os.path.join(init, "var", "lib", "app"))
    # a fresh process (a restarted daemon) finds the same layer on disk
    again = Snapshotter(str(tmp_path / "snapshots"))
    again.ensure_layers = lambda _image: [top, bottom]  # type: ignore[method-assign]
    assert again.prepare("c", image, mountpoints=mps).lowerdirs[0] == init
    # nothing missing, read-only snapshots, no mount points: no init layer
    assert snaps.prepare("d", image, mountpoints=[("/etc/hosts", False)]).lowerdirs == [top, bottom]
    assert snaps.prepare("e", image).lowerdirs == [top, bottom]
    assert snaps.prepare("f", image, readonly=True, mountpoints=mps).lowerdirs[:2] == [top, bottom]
    # the mounted view: the image's files, the new mount points, an empty upper dir
    target = tmp_path / "mnt"
    a.mount(str(target))
    try:
        assert (target / "etc" / "hosts").read_text() == "image hosts\n"
        assert (target / "etc" / "resolv.conf").read_text() == ""
        assert (target / "var" / "run").is_symlink() and (target / "var" / "lib" / "app").is_dir()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert os.listdir(snaps.upperdir("a")) == []
    for key in "abcdef":
        snaps.remove(key)
    assert snaps.list() == [] and snaps.leftovers() == []


def test_removing_the_image_layer_removes_its_unused_init_layers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    snaps = Snapshotter(str(tmp_path / "snapshots"))
    chain = "sha256:" + "2" * 64
    fs = Path(snaps.layer_fs(chain))
    (fs / "etc").mkdir(parents=True)
    Path(snaps.layer_dir(chain), "meta.json").write_text("{}")
    image = SimpleNamespace(id="sha256:" + "3" * 64, manifest={"layers": [{"digest": "d", "mediaType": "m"}]},
                            layers=["sha256:" + "4" * 64], chain_ids=[chain])
    a = snaps.prepare("a", image, mountpoints=[("/etc/hosts", False)])
    init_dir = os.path.dirname(a.lowerdirs[0])
    assert a.lowerdirs[1:] == [str(fs)]
    snaps.remove_layer(chain)  # (an image removal checks its snapshots first; here one still uses it)
    assert os.path.isdir(init_dir)
    snaps.remove("a")
    Path(snaps.layer_dir(chain)).mkdir(parents=True, exist_ok=True)
    snaps.remove_layer(chain)
    assert not os.path.exists(init_dir) and os.listdir(os.path.join(snaps.root, "init")) == []
    assert snaps.leftovers() == []
