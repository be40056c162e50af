"""Layer apply and diff on a real filesystem (root: devices, ownership, trusted xattrs)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

import pytest
from images_fixtures import entry, gz, make_tar, zst

from tugboat.snapshots.layer import HashingGzipWriter, LayerError, apply_layer, diff_dirs


def full_layer() -> bytes:
    return make_tar([
        entry("./", "dir", mode=0o755),
        entry("etc", "dir", mode=0o755, mtime=1_500_000_000),
        entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
        entry("etc/secret", data=b"s", mode=0o600, uid=1000, gid=1001),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
        entry("bin/link", "symlink", target="tool"),
        entry("bin/abs", "symlink", target="/etc/passwd"),
        entry("bin/hard", "hardlink", target="bin/tool"),
        entry("dev/null", "char", mode=0o666, major=1, minor=3),
        entry("dev/loop0", "block", mode=0o660, major=7, minor=0),
        entry("run/fifo", "fifo", mode=0o600),
        entry("x/xattr", data=b"x", xattrs={"user.color": "blue"}),
        entry("long/" + "d" * 120 + "/" + "f" * 150, data=b"long"),
        entry("tmp", "dir", mode=0o1777),
    ])


@pytest.mark.parametrize("compress", ["plain", "gzip", "zstd"])
def test_apply_everything(tmp_path, compress: str) -> None:
    raw = full_layer()
    blob = {"plain": raw, "gzip": gz(raw), "zstd": zst(raw)}[compress]
    path = tmp_path / "layer"
    path.write_bytes(blob)
    out = tmp_path / "out"
    res = apply_layer(str(path), str(out))
    assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert res.size == len(raw)
    assert (out / "etc/passwd").read_bytes().startswith(b"root:")
    st = os.lstat(out / "etc/secret")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o600)
    assert stat.S_IMODE(os.lstat(out / "bin/tool").st_mode) == 0o4755
    assert os.readlink(out / "bin/link") == "tool" and os.readlink(out / "bin/abs") == "/etc/passwd"
    assert os.lstat(out / "bin/hard").st_ino == os.lstat(out / "bin/tool").st_ino
    dn = os.lstat(out / "dev/null")
    assert stat.S_ISCHR(dn.st_mode) and os.major(dn.st_rdev) == 1 and os.minor(dn.st_rdev) == 3
    assert stat.S_ISBLK(os.lstat(out / "dev/loop0").st_mode)
    assert stat.S_ISFIFO(os.lstat(out / "run/fifo").st_mode)
    assert os.getxattr(out / "x/xattr", "user.color") == b"blue"
    assert os.lstat(out / "etc").st_mtime == 1_500_000_000
    assert os.lstat(out / "etc/passwd").st_mtime == 1_600_000_000
    assert stat.S_IMODE(os.lstat(out / "tmp").st_mode) == 0o1777
    assert (out / ("long/" + "d" * 120 + "/" + "f" * 150)).read_bytes() == b"long"


def test_gnu_format_and_stream_input(tmp_path) -> None:
    raw = make_tar([entry("a/" + "n" * 200, data=b"gnu"), entry("big", data=os.urandom(3 << 20))],
                   fmt=tarfile.GNU_FORMAT)
    res = apply_layer(io.BytesIO(gz(raw)), str(tmp_path / "o"))
    assert (tmp_path / "o" / ("a/" + "n" * 200)).read_bytes() == b"gnu"
    assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_whiteouts_become_overlay_whiteouts(tmp_path) -> None:
    raw = make_tar([
        entry("etc", "dir"),
        entry("etc/.wh.removed", data=b""),
        entry("var", "dir"),
        entry("var/.wh..wh..opq", data=b""),
        entry("var/new", data=b"n"),
    ])
    out = tmp_path / "o"
    apply_layer(io.BytesIO(raw), str(out))
    st = os.lstat(out / "etc/removed")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(out / "var", "trusted.overlay.opaque") == b"y"
    assert not (out / "etc/.wh.removed").exists()
    assert (out / "var/new").read_bytes() == b"n"


def test_whiteouts_delete_mode(tmp_path) -> None:
    out = tmp_path / "o"
    apply_layer(io.BytesIO(make_tar([entry("a", data=b"1"), entry("d", "dir"), entry("d/old", data=b"o")])),
                str(out))
    apply_layer(io.BytesIO(make_tar([entry(".wh.a", data=b""), entry("d", "dir"), entry("d/new", data=b"n"),
                                     entry("d/.wh..wh..opq", data=b"")])), str(out), whiteouts="delete")
    assert not (out / "a").exists()
    assert sorted(os.listdir(out / "d")) == ["new"]


def test_layer_cannot_forge_overlay_xattrs(tmp_path) -> None:
    raw = make_tar([entry("d/f", data=b"x", xattrs={"trusted.overlay.redirect": "/etc"})])
    apply_layer(io.BytesIO(raw), str(tmp_path / "o"))
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "o/d/f", "trusted.overlay.redirect")


HOSTILE = {
    "dotdot": [entry("../escape", data=b"x")],
    "dotdot-inner": [entry("a/../../escape", data=b"x")],
    "absolute": [entry("/etc/escape", data=b"x")],
    "symlink-escape": [entry("link", "symlink", target="../../../../etc")],
    "symlink-escape-deep": [entry("a/b/link", "symlink", target="../../../x")],
    "hardlink-escape": [entry("hl", "hardlink", target="../../etc/passwd")],
    "hardlink-absolute": [entry("hl", "hardlink", target="/etc/passwd")],
    "hardlink-missing": [entry("hl", "hardlink", target="nothere")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_refused(tmp_path, case: str) -> None:
    raw = make_tar([entry("ok", data=b"fine"), *HOSTILE[case]])
    with pytest.raises(LayerError, match="refusing layer"):
        apply_layer(io.BytesIO(raw), str(tmp_path / "root" / "o"))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "root" / "escape").exists()


def test_absolute_symlink_parent_stays_inside_root(tmp_path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    raw = make_tar([entry("etc", "dir"), entry("d", "symlink", target=str(host)),
                    entry("d/planted", data=b"x")])
    out = tmp_path / "o"
    apply_layer(io.BytesIO(raw), str(out))
    assert not (host / "planted").exists()
    assert (out / str(host).lstrip("/") / "planted").read_bytes() == b"x"


def test_dir_replaced_by_symlink_cannot_redirect_later_entries(tmp_path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    raw = make_tar([entry("a", "dir"), entry("a/b", "dir"), entry("a", "symlink", target=str(host)),
                    entry("a/b/x", data=b"x")])
    out = tmp_path / "o"
    apply_layer(io.BytesIO(raw), str(out))
    assert list(host.iterdir()) == []
    assert (out / str(host).lstrip("/") / "b/x").read_bytes() == b"x"


@pytest.mark.parametrize("how", ["truncated-gzip", "corrupt-gzip", "truncated-tar", "garbage", "truncated-zstd"])
def test_truncated_or_corrupt(tmp_path, how: str) -> None:
    raw = make_tar([entry("f", data=os.urandom(200_000)), entry("g", data=b"x" * 5000)])
    if how == "truncated-gzip":
        blob = gz(raw)[: len(gz(raw)) // 2]
    elif how == "corrupt-gzip":
        b = bytearray(gz(raw))
        b[len(b) // 2] ^= 0xFF
        blob = bytes(b)
    elif how == "truncated-tar":
        blob = raw[:100_000]
    elif how == "truncated-zstd":
        blob = zst(raw)[:50_000]
    else:
        blob = os.urandom(4096)
    p = tmp_path / "blob"
    p.write_bytes(blob)
    with pytest.raises(LayerError):
        apply_layer(str(p), str(tmp_path / "o"))


def test_diff_roundtrip(tmp_path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/new").write_text("hello")
    os.link(upper / "etc/new", upper / "etc/new2")
    os.symlink("new", upper / "etc/lnk")
    os.mknod(upper / "etc/gone", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq/inside").write_text("i")
    buf = io.BytesIO()
    w = HashingGzipWriter(buf)
    diff_dirs(str(upper), w)  # type: ignore[arg-type]
    w.close()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        members = {m.name: m for m in tf.getmembers()}
    names = list(members)
    assert "etc/.wh.gone" in names and "opq/.wh..wh..opq" in names and "etc/gone" not in names
    assert members["etc/new2"].islnk() and members["etc/new2"].linkname == "etc/new"
    res = apply_layer(io.BytesIO(buf.getvalue()), str(tmp_path / "again"))
    assert res.diff_id == w.diff_id
    assert stat.S_ISCHR(os.lstat(tmp_path / "again/etc/gone").st_mode)
    assert os.getxattr(tmp_path / "again/opq", "trusted.overlay.opaque") == b"y"
