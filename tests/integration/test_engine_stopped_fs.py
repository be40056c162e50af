"""A stopped container keeps no mount (as with docker): its rootfs is unmounted at exit and mounted
again for start, `docker cp` (with the container's volumes and binds, as docker mounts them for the
copy) and export; nothing of a stopped container stays mounted across a daemon restart."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time

import pytest

import engine_support
from engine_support import Daemon
from tugboat.errors import NotFound

daemon = engine_support.daemon


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def _mounts_of(cid: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if cid in line]


def _rootfs(d: Daemon, cid: str) -> str:
    return os.path.join(d.root, "containers", cid, "bundle", "rootfs")


def _wait_unmounted(path: str, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not _mounted(path):
            return True
        time.sleep(0.02)
    return False


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _untar(raw: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        for m in tf:
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def test_stopped_container_unmounted_and_cp_sees_volumes(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = daemon.client()
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "host.txt").write_text("from the bind\n")
    cid = c.post("/containers/create", {
        "Image": "busybox", "Cmd": ["sh", "-c", "echo vol > /vol/made.txt; echo root > /made-here; sleep 60"],
        "HostConfig": {"Binds": ["stoppedvol:/vol", f"{bind}:/bind:ro"]}})["Id"]
    try:
        c.post(f"/containers/{cid}/start")
        rootfs = _rootfs(daemon, cid)
        assert _mounted(rootfs)
        end = time.time() + 10
        while daemon.tug("exec", cid, "cat", "/vol/made.txt").stdout != b"vol\n" and time.time() < end:
            time.sleep(0.05)
        c.post(f"/containers/{cid}/stop", query={"t": "0"})
        assert _wait_unmounted(rootfs), "a stopped container's rootfs stays mounted"

        # docker cp from a stopped container: the volume's and the bind's files are there
        out = tmp_path / "out"
        p = daemon.tug("cp", f"{cid}:/vol/made.txt", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_text() == "vol\n"
        raw = b"".join(c.stream("GET", f"/containers/{cid}/archive", query={"path": "/bind"}))
        assert _untar(raw) == {"bind/host.txt": b"from the bind\n"}
        assert daemon.tug("cp", f"{cid}:/made-here", str(tmp_path / "mh")).returncode == 0
        assert (tmp_path / "mh").read_text() == "root\n"
        # ... and into it: a file put in the volume's directory lands in the volume
        c.put(f"/containers/{cid}/archive", raw_body=_tar("put.txt", b"put while stopped\n"), query={"path": "/vol"})
        vol = c.get("/volumes/stoppedvol")
        with open(os.path.join(vol["Mountpoint"], "put.txt")) as f:
            assert f.read() == "put while stopped\n"
        # a read-only bind stays read-only for the copy
        with pytest.raises(Exception, match=r"[Rr]ead-only"):
            c.put(f"/containers/{cid}/archive", raw_body=_tar("x.txt", b"no\n"), query={"path": "/bind"})
        assert not (bind / "x.txt").exists()
        with pytest.raises(NotFound):
            c.head(f"/containers/{cid}/archive", query={"path": "/vol/nope"})
        # the copies left nothing mounted (neither the rootfs nor the volumes)
        assert not _mounted(rootfs)
        assert not _mounts_of(cid)

        # export, diff and commit of the stopped container
        exported = b"".join(c.stream("GET", f"/containers/{cid}/export"))
        with tarfile.open(fileobj=io.BytesIO(exported)) as tf:
            assert "made-here" in tf.getnames()
        assert not _mounted(rootfs)
        assert {"Path": "/made-here", "Kind": 1} in c.get(f"/containers/{cid}/changes")

        # start again: the rootfs is mounted once more and the put file is visible
        c.post(f"/containers/{cid}/start")
        assert _mounted(rootfs)
        assert daemon.tug("exec", cid, "cat", "/vol/put.txt").stdout == b"put while stopped\n"
        c.post(f"/containers/{cid}/kill")
        assert _wait_unmounted(rootfs)
        c.post(f"/containers/{cid}/start")
        assert _mounted(rootfs)
    finally:
        c.delete(f"/containers/{cid}", query={"force": "1"})
        c.delete("/volumes/stoppedvol")
    assert not os.path.exists(os.path.join(daemon.root, "containers", cid))
    # a force rm answers before the exit clean-up of the killed process has unmounted its rootfs
    end = time.time() + 10
    while _mounts_of(cid) and time.time() < end:
        time.sleep(0.02)
    assert not _mounts_of(cid)


def test_run_d_stop_rm_cycle_leaves_nothing(daemon: Daemon) -> None:
    """The fast path of `run -d` + `stop -t 0` + `rm`: stop answers before the clean-up is done;
    an immediate rm (and a new container under the same name) still finds everything in order."""
    c = daemon.client()
    for _ in range(3):
        cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "60"]},
                     query={"name": "cycle"})["Id"]
        c.post(f"/containers/{cid}/start")
        c.post(f"/containers/{cid}/stop", query={"t": "0"})
        st = c.get(f"/containers/{cid}/json")["State"]
        assert (st["Status"], st["ExitCode"]) == ("exited", 137)
        c.delete(f"/containers/{cid}")
        with pytest.raises(NotFound):
            c.get(f"/containers/{cid}/json")
        assert not os.path.exists(os.path.join(daemon.root, "containers", cid))
        # the exit clean-up and the reaper finish in the background, promptly
        end = time.time() + 10
        while time.time() < end and (_mounts_of(cid) or os.path.exists(os.path.join(daemon.root, "runtime", cid))
                                     or os.path.exists(os.path.join(daemon.root, "containers", cid + ".removing"))):
            time.sleep(0.02)
        assert not os.path.exists(os.path.join(daemon.root, "runtime", cid))
        assert not os.path.exists(os.path.join(daemon.root, "containers", cid + ".removing"))
        assert not _mounts_of(cid)


def test_daemon_restart_keeps_no_mount_of_stopped_containers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = str(tmp_path / "root")
    os.makedirs(root)
    engine_support.bootstrap_busybox(root)
    d = Daemon(root=root, sock=str(tmp_path / "tug.sock"), env={"TUG_ENGINE_NO_NETWORK": "1"})
    d.start()
    try:
        c = d.client()
        stopped = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, query={"name": "st"})["Id"]
        created = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, query={"name": "cr"})["Id"]
        gone = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, query={"name": "gone"})["Id"]
        c.post(f"/containers/{stopped}/start")
        assert c.post(f"/containers/{stopped}/wait")["StatusCode"] == 0
        assert _wait_unmounted(_rootfs(d, stopped))
        d.stop()
        assert not _mounted(_rootfs(d, stopped)) and not _mounted(_rootfs(d, created))
        # a removal the daemon did not finish (it died after `rm` answered): finished at start
        from tugboat.images.service import ImageService

        os.rename(os.path.join(root, "containers", gone), os.path.join(root, "containers", gone + ".removing"))
        assert gone in ImageService(root).snapshotter.list()
        d.start()
        c = d.client()
        assert not _mounted(_rootfs(d, stopped))
        assert not os.path.exists(os.path.join(root, "containers", gone + ".removing"))
        assert gone not in ImageService(root).snapshotter.list()
        assert [x["Id"] for x in c.get("/containers/json", query={"all": "1"}) if x["Id"] == gone] == []
        c.post(f"/containers/{created}/start")  # mounted again for its first run
        assert c.post(f"/containers/{created}/wait")["StatusCode"] == 0
        c.post(f"/containers/{stopped}/start")
        assert c.post(f"/containers/{stopped}/wait")["StatusCode"] == 0
        assert c.get(f"/containers/{stopped}/json")["RestartCount"] == 0
        for cid in (stopped, created):
            c.delete(f"/containers/{cid}")
    finally:
        d.stop()
        engine_support.cleanup_root(root)


def test_cp_into_stopped_container_with_symlinked_mountpoint_stays_inside(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The container swaps a volume's parent directory for a symlink to a host path; copying into
    the stopped container must resolve it inside the container's root, never on the host."""
    c = daemon.client()
    host_dir = tmp_path / "host-target"
    cid = c.post("/containers/create", {
        "Image": "busybox",
        "Cmd": ["sh", "-c", f"mv /data /data.old && ln -s {host_dir} /data && touch /ready; sleep 60"],
        "HostConfig": {"Binds": ["symvol:/data/sub"]}})["Id"]
    try:
        c.post(f"/containers/{cid}/start")
        end = time.time() + 10
        while daemon.tug("exec", cid, "ls", "/ready").returncode != 0 and time.time() < end:
            time.sleep(0.05)
        assert daemon.tug("exec", cid, "readlink", "/data").stdout.strip() == str(host_dir).encode()
        c.post(f"/containers/{cid}/stop", query={"t": "0"})
        with contextlib.suppress(Exception):
            c.put(f"/containers/{cid}/archive", raw_body=_tar("x.txt", b"x\n"), query={"path": "/data/sub"})
        assert not host_dir.exists(), "a copy into a stopped container wrote on the host"
    finally:
        c.delete(f"/containers/{cid}", query={"force": "1", "v": "1"})
        with contextlib.suppress(Exception):
            c.delete("/volumes/symvol")


def test_with_networking_stop_releases_endpoint_and_ports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With a network manager: right after `stop` answers (the teardown runs after it), a network
    removal already succeeds, and `ps -a` shows no PORTS for the exited container."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = str(tmp_path / "root")
    os.makedirs(root)
    engine_support.bootstrap_busybox(root)
    d = Daemon(root=root, sock=str(tmp_path / "tug.sock"),
               env={"TUG_NETWORK_INSTANCE": "s" + os.urandom(2).hex()})
    d.start()
    try:
        c = d.client()
        if "networking is not available" in " ".join(c.get("/info").get("Warnings") or []):
            pytest.skip("the daemon runs without networking here")
        c.post("/networks/create", {"Name": "stopnet"})
        for _ in range(2):
            cid = c.post("/containers/create", {
                "Image": "busybox", "Cmd": ["sleep", "60"], "ExposedPorts": {"80/tcp": {}},
                "HostConfig": {"NetworkMode": "stopnet",
                               "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}}})["Id"]
            c.post(f"/containers/{cid}/start")
            row = c.get("/containers/json", query={"filters": json.dumps({"id": [cid]})})[0]
            assert [p["PrivatePort"] for p in row["Ports"]] == [80] and row["Ports"][0]["PublicPort"] > 0
            assert cid in c.get("/networks/stopnet")["Containers"]
            c.post(f"/containers/{cid}/stop", query={"t": "0"})
            row = c.get("/containers/json", query={"all": "1", "filters": json.dumps({"id": [cid]})})[0]
            assert row["State"] == "exited" and row["Ports"] == []
            assert not c.get("/networks/stopnet")["Containers"]
            c.delete(f"/containers/{cid}")
        c.delete("/networks/stopnet")
    finally:
        d.stop()
        engine_support.cleanup_root(root)
