"""The container's filesystem in real containers: recursive read-only binds (rro), bind sources
the container's root cannot reach (user namespaces), --no-pivot hiding the host's proc/sysfs,
and createContainer hooks running in the rootfs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from runtime_fixtures import Bundles, run_capture

from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)


@pytest.fixture
def volume(tmp_path: Any) -> Iterator[str]:
    """A tmpfs with a file and a tmpfs sub-mount (``sub``) holding another file."""
    vol = str(tmp_path / "vol")
    os.makedirs(vol)
    subprocess.run(["mount", "-t", "tmpfs", "none", vol], check=True)
    try:
        with open(os.path.join(vol, "foo"), "w") as f:
            f.write("foo")
        os.makedirs(os.path.join(vol, "sub"))
        subprocess.run(["mount", "-t", "tmpfs", "none", os.path.join(vol, "sub")], check=True)
        with open(os.path.join(vol, "sub", "bar"), "w") as f:
            f.write("bar")
        yield vol
    finally:
        subprocess.run(["umount", "-R", vol], check=False)


def _with_mount(source: str, options: list[str]) -> Any:
    def edit(c: dict) -> None:
        c["mounts"].append({"source": source, "destination": "/mnt", "type": "bind", "options": options})
    return edit


TOUCH_BOTH = "touch /mnt/foo && echo top-rw; touch /mnt/sub/bar && echo sub-rw; true"


def test_rro_is_recursive_and_ro_is_not(runtime: Runtime, bundles: Bundles, volume: str) -> None:
    code, out = run_capture(runtime, bundles.make(["sh", "-c", TOUCH_BOTH], edit=_with_mount(volume, ["rbind", "ro"])))
    assert code == 0 and "top-rw" not in out and "sub-rw" in out, out
    for opts in (["rbind", "rro"], ["rbind", "ro", "rro"]):
        code, out = run_capture(runtime, bundles.make(["sh", "-c", TOUCH_BOTH], edit=_with_mount(volume, opts)))
        assert code == 0 and "top-rw" not in out and "sub-rw" not in out, (opts, out)
        assert out.count("Read-only file system") == 2, (opts, out)
    # the host's side of the volume stays writable
    with open(os.path.join(volume, "sub", "bar"), "a") as f:
        f.write("x")


def _open_up(path: str) -> None:
    """Let the container's root (host uid 100000) traverse the 0700 pytest temp dirs above path."""
    d = os.path.dirname(path)
    while d not in ("/", "/tmp"):
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)


def test_userns_binds_sources_the_container_root_cannot_reach(runtime: Runtime, bundles: Bundles) -> None:
    """Relative sources resolve against the bundle; sources under a 0700 directory are opened by
    the runtime (host root) before the user namespace exists, as runc does."""
    def edit(c: dict) -> None:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["type"] != "cgroup"]
        c["mounts"] += [{"source": f"secret-{n}/dir", "destination": f"/tmp/mount-{n}", "options": ["bind"]}
                        for n in (1, 2)]

    bundle = bundles.make(["stat", "-c", "%n %s", "/tmp/mount-1/foo.txt", "/tmp/mount-2/foo.txt"], edit=edit)
    for n in (1, 2):
        d = os.path.join(bundle, f"secret-{n}", "dir")
        os.makedirs(d)
        with open(os.path.join(d, "foo.txt"), "w") as f:
            f.write("x" * n)
        os.chmod(os.path.dirname(d), 0o700)
    _open_up(bundle)
    _open_up(bundles.template)
    code, out = run_capture(runtime, bundle)
    assert code == 0, out
    assert out.split("\n")[:2] == ["/tmp/mount-1/foo.txt 1", "/tmp/mount-2/foo.txt 2"], out


def test_no_pivot_hides_the_hosts_proc(runtime: Runtime, bundles: Bundles) -> None:
    """Without pivot_root the host's mounts stay in the mount namespace; a full host /proc among
    them would let a new user namespace mount an unmasked proc (runc's no_pivot.bats)."""
    def edit(c: dict) -> None:
        c["linux"].pop("seccomp", None)  # Docker's profile refuses unshare without CAP_SYS_ADMIN
        c["process"]["noNewPrivileges"] = False

    bundle = bundles.make(["unshare", "-mrpf", "sh", "-c", "mount -t proc none /proc && echo MOUNTED"], edit=edit)
    cid = f"np-{uuid.uuid4().hex[:6]}"
    out_path = os.path.join(bundle, "out.txt")
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        runtime.create(cid, bundle, stdin=None, stdout=fd, stderr=fd, no_pivot=True)
    finally:
        os.close(fd)
    try:
        runtime.start(cid)
        code = runtime.wait(cid, timeout=30)
    finally:
        runtime.delete(cid, force=True)
    with open(out_path) as f:
        out = f.read()
    assert code != 0 and "MOUNTED" not in out and "permission denied" in out, out


def test_create_container_hook_runs_in_the_rootfs(
    runtime: Runtime, bundles: Bundles, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a hook run in the caller's directory would write

    def edit(c: dict) -> None:
        c["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "pwd > ./hook-cwd"]}]}

    bundle = bundles.make(["cat", "/hook-cwd"], edit=edit, copy_rootfs=True)
    code, out = run_capture(runtime, bundle)
    assert code == 0, out
    assert out.strip() == os.path.realpath(os.path.join(bundle, "rootfs")), out
    assert not os.path.exists(tmp_path / "hook-cwd")
