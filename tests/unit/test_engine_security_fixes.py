"""The engine's security audit fixes that need no root: reading a container's files never leaves its
rootfs (S-7), a read-only rootfs makes the engine's files read-only (S-4), the default seccomp
profile never silently falls away, and API clients never see host paths of internal errors (S-5)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tugboat.api.common import internal_message
from tugboat.engine import spec as specmod
from tugboat.engine.util import read_colon_file_in_root, read_in_root
from tugboat.errors import Internal, InvalidArgument


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    return r


def test_read_in_root_reads_regular_files(rootfs: Path) -> None:
    assert read_in_root(str(rootfs), "etc/passwd") == (rootfs / "etc/passwd").read_bytes()
    assert read_in_root(str(rootfs), "/etc/missing") is None
    assert read_colon_file_in_root(str(rootfs), "etc/group")[2] == ["extra", "x", "2000", "app"]


def test_read_in_root_resolves_symlinks_inside_the_root(rootfs: Path, tmp_path: Path) -> None:
    host = tmp_path / "host-passwd"
    host.write_text("hostuser:x:4242:4343::/host-home:/bin/sh\n")
    (rootfs / "etc/passwd").unlink()
    os.symlink(str(host), rootfs / "etc/passwd")  # absolute: means <rootfs>/tmp/…/host-passwd
    assert read_in_root(str(rootfs), "etc/passwd") is None
    os.unlink(rootfs / "etc/passwd")
    os.symlink("../../../../../../../.." + str(host), rootfs / "etc/passwd")  # `..` stops at the root
    assert read_in_root(str(rootfs), "etc/passwd") is None
    with pytest.raises(InvalidArgument, match="unable to find user hostuser"):
        specmod.resolve_user(str(rootfs), "hostuser")
    # a symlink that stays inside is followed, as the container would see it
    (rootfs / "etc/real").write_text("app:x:1000:1000::/home/app:/bin/sh\n")
    os.unlink(rootfs / "etc/passwd")
    os.symlink("/etc/real", rootfs / "etc/passwd")
    assert specmod.resolve_user(str(rootfs), "app")["uid"] == 1000


def test_read_in_root_refuses_fifos_devices_and_huge_files(rootfs: Path) -> None:
    (rootfs / "etc/passwd").unlink()
    os.mkfifo(rootfs / "etc/passwd")  # would block a plain open() forever
    assert read_in_root(str(rootfs), "etc/passwd") is None
    assert specmod.resolve_user(str(rootfs), "0")["uid"] == 0
    os.unlink(rootfs / "etc/passwd")
    os.symlink("/dev/zero", rootfs / "etc/passwd")  # the container's own /dev/zero: absent here
    assert read_in_root(str(rootfs), "etc/passwd") is None
    os.unlink(rootfs / "etc/passwd")
    with open(rootfs / "etc/passwd", "wb") as f:
        f.truncate(5 << 20)
    assert read_in_root(str(rootfs), "etc/passwd") is None
    assert read_in_root(str(rootfs), "etc/passwd", limit=6 << 20) is not None


def _container(tmp_path: Path, rootfs: Path, **hc: Any) -> Any:
    image = SimpleNamespace(id="sha256:" + "0" * 64)
    data = specmod.fill_defaults("c" * 64, "/t", {"Image": "x", "Cmd": ["sh"]}, hc, {}, image, {})
    for key, name in (("HostnamePath", "hostname"), ("HostsPath", "hosts"), ("ResolvConfPath", "resolv.conf")):
        data[key] = str(tmp_path / name)
    c = SimpleNamespace(id=data["Id"], name="/t", data=data, dir=str(tmp_path))
    c.tug = {"Rootfs": str(rootfs)}
    return c


def _engine() -> Any:
    return SimpleNamespace(runtime=SimpleNamespace(kind="tug"))


def test_read_only_rootfs_makes_engine_files_read_only(tmp_path: Path, rootfs: Path) -> None:
    ro = specmod.build_spec(_engine(), _container(tmp_path, rootfs, ReadonlyRootfs=True), None)
    assert ro["root"]["readonly"] is True
    by_dest = {m["destination"]: m for m in ro["mounts"]}
    for dest in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert "ro" in by_dest[dest]["options"], by_dest[dest]
    for dest in ("/proc", "/dev", "/dev/shm"):
        assert "ro" not in by_dest[dest].get("options", []), by_dest[dest]
    rw = specmod.build_spec(_engine(), _container(tmp_path, rootfs), None)
    assert "ro" not in {m["destination"]: m for m in rw["mounts"]}["/etc/hosts"]["options"]


def test_seccomp_failure_refuses_the_container(tmp_path: Path, rootfs: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    import tugboat.runtime.spec as rtspec

    base = rtspec.default_spec(["sh"])

    def spec_without_profile(args: list[str], terminal: bool = False) -> dict:
        return {**copy.deepcopy(base), "process": {**copy.deepcopy(base["process"]), "args": list(args)}}

    def broken(_caps: Any = None) -> dict:
        raise ValueError("profile unreadable")

    monkeypatch.setattr(rtspec, "default_spec", spec_without_profile)
    monkeypatch.setattr(rtspec, "default_seccomp", broken)
    monkeypatch.setattr(specmod, "_SECCOMP_CACHE", {})
    with pytest.raises(Internal, match="seccomp"):
        specmod.build_spec(_engine(), _container(tmp_path, rootfs), None)
    # unconfined on request still works
    spec = specmod.build_spec(_engine(), _container(tmp_path, rootfs, SecurityOpt=["seccomp=unconfined"]), None)
    assert "seccomp" not in spec["linux"]


def test_internal_errors_hide_host_paths() -> None:
    exc = OSError(36, "File name too long", "/var/lib/tugboat/snapshots/tmp/x/" + "a" * 300)
    msg = internal_message(exc)
    assert "/var/lib" not in msg and "File name too long" in msg
    assert "secret-path" not in internal_message(RuntimeError("/secret-path/x"))


def test_json_file_logs_are_private(tmp_path: Path) -> None:
    from tugboat.engine.logs import JsonFileWriter

    old = os.umask(0o022)
    try:
        w = JsonFileWriter(str(tmp_path / "c-json.log"))
        w.write("stdout", b"secret\n")
        w.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "c-json.log").st_mode) == 0o600
