"""docker-py (7.x) calls beyond run/stop/rm: logs, wait, kill, top, stats, archives, events, df,
prunes, lists; and the docker CLI's prune commands."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time

import pytest

import engine_support
from conftest import require_binary
from engine_support import Daemon

docker = pytest.importorskip("docker")

daemon = engine_support.daemon


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    c = docker.DockerClient(base_url=daemon.host, version="auto")
    yield c
    c.close()


def test_logs_wait_kill_top_stats(client) -> None:  # type: ignore[no-untyped-def]
    c = client.containers.run("busybox", ["sh", "-c", "echo one; echo two >&2; sleep 30"], detach=True, name="sdkm1")
    try:
        end = time.time() + 10
        while b"two" not in c.logs() and time.time() < end:
            time.sleep(0.05)
        assert c.logs(stdout=True, stderr=False) == b"one\n"
        assert c.logs(stdout=False, stderr=True) == b"two\n"
        assert c.logs(timestamps=True).split(b" ", 1)[0].endswith(b"Z")
        top = c.top()
        assert "PID" in top["Titles"] and any("sleep 30" in " ".join(p) for p in top["Processes"])
        st = c.stats(stream=False)
        assert st["pids_stats"]["current"] >= 1 and "memory_stats" in st and "cpu_stats" in st
        assert client.containers.list(all=True, filters={"name": "sdkm1"})[0].id == c.id
        c.kill(signal="SIGKILL")
        assert c.wait(timeout=10)["StatusCode"] == 137
        c.reload()
        assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
        assert c.logs() == b"one\ntwo\n"  # readable after exit
    finally:
        c.remove(force=True)


def test_archives_both_ways_on_running_and_stopped(client) -> None:  # type: ignore[no-untyped-def]
    c = client.containers.run("busybox", ["sleep", "30"], detach=True, name="sdkm2", volumes={"sdkmvol": {"bind": "/v"}})
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            data = b"sdk put\n"
            ti = tarfile.TarInfo("put.txt")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        assert c.put_archive("/v", buf.getvalue()) is True
        c.stop(timeout=0)
        stream, stat = c.get_archive("/v/put.txt")  # stopped: the volume is mounted for the copy
        assert stat["name"] == "put.txt" and stat["size"] == 8
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
            f = tf.extractfile("put.txt")
            assert f is not None and f.read() == b"sdk put\n"
        with pytest.raises(docker.errors.NotFound):
            c.get_archive("/nope")
    finally:
        c.remove(force=True)
        client.volumes.get("sdkmvol").remove()


def test_events_df_prunes_and_lists(client) -> None:  # type: ignore[no-untyped-def]
    since = int(time.time()) - 1
    c = client.containers.create("busybox", ["true"], name="sdkm3", labels={"sdkm": "1"})
    v = client.volumes.create("sdkm-unused", labels={"sdkm": "1"})
    until = int(time.time()) + 1
    acts = [(e["Type"], e["Action"]) for e in client.events(since=since, until=until, decode=True)]
    assert ("container", "create") in acts and ("volume", "create") in acts
    df = client.df()
    assert {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"} <= set(df)
    assert any(x["Id"] == c.id for x in df["Containers"])
    assert any(i.tags == ["busybox:latest"] or "busybox:latest" in i.tags for i in client.images.list())
    pr = client.containers.prune(filters={"label": "sdkm=1"})
    assert pr["ContainersDeleted"] == [c.id]
    vp = client.volumes.prune(filters={"label": "sdkm=1", "all": "true"})
    assert "sdkm-unused" in (vp["VolumesDeleted"] or [])
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(v.name)
    ip = client.images.prune()
    assert "ImagesDeleted" in ip and "SpaceReclaimed" in ip


def test_cli_prunes(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    exe = require_binary("docker")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(tmp_path))
    env.pop("DOCKER_CONTEXT", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, timeout=60, env=env)

    assert run("create", "--name", "clip1", "busybox", "true").returncode == 0
    assert run("volume", "create", "clipvol").returncode == 0
    p = run("volume", "prune", "-af")
    assert p.returncode == 0 and b"clipvol" in p.stdout, p.stderr
    p = run("image", "prune", "-f")
    assert p.returncode == 0 and b"Total reclaimed space" in p.stdout, p.stderr
    p = run("system", "prune", "-f")
    assert p.returncode == 0, p.stderr
    assert b"Total reclaimed space" in p.stdout
    assert run("ps", "-aq", "--filter", "name=clip1").stdout.strip() == b""
    assert run("image", "inspect", "busybox").returncode == 0  # in use by nothing, but tagged: kept
