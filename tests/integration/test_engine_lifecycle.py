"""The engine daemon end to end: tug CLI and raw API against a real daemon and real containers."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time

import pytest

import engine_support
from engine_support import Daemon
from tugboat.errors import Conflict, InvalidArgument, NotFound

daemon = engine_support.daemon


def _wait_until(fn, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while time.time() < end:
        if fn():
            return True
        time.sleep(0.05)
    return False


def test_run_exit_code_and_streams(daemon: Daemon) -> None:
    p = daemon.tug("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"out\n"
    assert p.stderr == b"err\n"
    ps = daemon.tug("ps", "-a", "-q")
    assert ps.stdout.strip() == b""  # --rm removed it


def test_run_stdin_and_missing_command(daemon: Daemon) -> None:
    p = daemon.tug("run", "-i", "--rm", "busybox", "cat", input=b"hello stdin\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hello stdin\n"
    p = daemon.tug("run", "--rm", "busybox", "nosuchcmd")
    assert p.returncode == 127
    assert b"executable file not found" in p.stderr
    assert daemon.tug("ps", "-a", "-q").stdout.strip() == b""


def test_detached_lifecycle_logs_exec_inspect(daemon: Daemon) -> None:
    p = daemon.tug("run", "-d", "--name", "life", "-e", "FOO=bar", "-w", "/tmp", "busybox",
                   "sh", "-c", "echo started; echo $FOO; exec sleep 60")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.decode().strip()
    assert len(cid) == 64
    c = daemon.client()
    assert _wait_until(lambda: b"bar" in daemon.tug("logs", "life").stdout)
    assert daemon.tug("logs", "life").stdout == b"started\nbar\n"
    ex = daemon.tug("exec", "life", "sh", "-c", "pwd; echo $FOO; exit 5")
    assert ex.returncode == 5
    assert ex.stdout == b"/tmp\nbar\n"
    info = c.get("/containers/life/json")
    assert info["State"]["Running"] is True
    assert info["Config"]["Env"][-1] == "FOO=bar"
    assert info["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert info["Name"] == "/life"
    ps = daemon.tug("ps", "--format", "{{.Names}} {{.State}}")
    assert b"life running" in ps.stdout
    # a name conflict is a 409 with docker's message
    with pytest.raises(Conflict, match='The container name "/life" is already in use'):
        c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, query={"name": "life"})
    # running container cannot be removed without force
    with pytest.raises(Conflict, match="container is running"):
        c.delete("/containers/life")
    t0 = time.time()
    assert daemon.tug("stop", "-t", "1", "life").returncode == 0
    assert time.time() - t0 < 5
    assert c.status_of("POST", "/containers/life/stop") == 304
    info = c.get("/containers/life/json")
    assert info["State"]["Status"] == "exited"
    assert info["State"]["ExitCode"] == 137  # sleep ignores TERM as pid 1: killed after the timeout
    assert daemon.tug("logs", "--tail", "1", "life").stdout == b"bar\n"
    assert daemon.tug("rm", "life").returncode == 0
    with pytest.raises(NotFound, match="No such container: life"):
        c.get("/containers/life/json")
    miss = daemon.tug("inspect", "life")
    assert miss.returncode == 1 and miss.stdout.strip() == b"[]" and b"No such object: life" in miss.stderr


def test_kill_delivers_non_fatal_signals(daemon: Daemon) -> None:
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": [
        "sh", "-c", "trap 'echo got-usr1' USR1; trap 'echo got-winch' WINCH; while true; do sleep 0.1; done"]})["Id"]
    c.post(f"/containers/{cid}/start")
    time.sleep(0.3)
    for sig in ("WINCH", "SIGUSR1", "10"):
        c.post(f"/containers/{cid}/kill", query={"signal": sig})
        time.sleep(0.3)
    assert c.get(f"/containers/{cid}/json")["State"]["Running"] is True
    logs = daemon.tug("logs", cid).stdout
    assert logs.count(b"got-usr1") == 2 and b"got-winch" in logs
    c.post(f"/containers/{cid}/kill")
    assert _wait_until(lambda: not c.get(f"/containers/{cid}/json")["State"]["Running"])
    assert c.get(f"/containers/{cid}/json")["State"]["ExitCode"] == 137
    with pytest.raises(Conflict, match="is not running"):
        c.post(f"/containers/{cid}/kill")
    c.delete(f"/containers/{cid}")


def test_bad_input_is_400_and_nothing_left_behind(daemon: Daemon) -> None:
    c = daemon.client()
    before = len(c.get("/containers/json", query={"all": "1"}))
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        c.call("POST", "/containers/create", raw_body=b"{not json", headers={"Content-Type": "application/json"})
    with pytest.raises(InvalidArgument, match=r"HostConfig\.Memory"):
        c.post("/containers/create", {"Image": "busybox", "HostConfig": {"Memory": -5}})
    with pytest.raises(InvalidArgument, match="CPUs"):
        c.post("/containers/create", {"Image": "busybox", "HostConfig": {"NanoCpus": 10_000 * 10**9}})
    with pytest.raises(InvalidArgument, match=r"Config\.Env"):
        c.post("/containers/create", {"Image": "busybox", "Env": "A=1"})
    with pytest.raises(NotFound, match="No such image: nosuchimage:latest"):
        c.post("/containers/create", {"Image": "nosuchimage"})
    with pytest.raises(InvalidArgument, match="invalid condition"):
        c.post("/containers/x/wait", query={"condition": "bogus"}) if False else c.call(
            "POST", "/containers/" + c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]},
                                             query={"name": "badwait"})["Id"] + "/wait",
            query={"condition": "bogus"})
    c.delete("/containers/badwait")
    assert len(c.get("/containers/json", query={"all": "1"})) == before
    assert not [d for d in os.listdir(os.path.join(daemon.root, "containers")) if not d.endswith(".removing")
                and d not in {x["Id"] for x in c.get("/containers/json", query={"all": "1"})}]


def test_volume_survives_container_and_copy_up(daemon: Daemon) -> None:
    p = daemon.tug("run", "--rm", "-v", "data1:/data", "busybox", "sh", "-c", "echo keep > /data/f")
    assert p.returncode == 0, p.stderr
    p = daemon.tug("run", "--rm", "-v", "data1:/data", "busybox", "cat", "/data/f")
    assert p.stdout == b"keep\n"
    # copy-up: a new volume mounted on /etc starts with the image's /etc
    p = daemon.tug("run", "--rm", "-v", "etcvol:/etc", "busybox", "cat", "/etc/passwd")
    assert b"root:" in p.stdout
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"],
                                        "HostConfig": {"Binds": ["data1:/data"]}})["Id"]
    with pytest.raises(Conflict, match="volume is in use"):
        c.delete("/volumes/data1")
    c.delete(f"/containers/{cid}", query={"force": "1"})
    c.delete("/volumes/data1")
    c.delete("/volumes/etcvol")
    with pytest.raises(NotFound, match="no such volume"):
        c.get("/volumes/data1")


def test_anonymous_volume_removed_with_rm_v(daemon: Daemon) -> None:
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"], "Volumes": {"/anon": {}}})["Id"]
    mounts = c.get(f"/containers/{cid}/json")["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "volume"
    name = mounts[0]["Name"]
    assert c.get(f"/volumes/{name}")["Name"] == name
    c.delete(f"/containers/{cid}", query={"v": "1"})
    with pytest.raises(NotFound):
        c.get(f"/volumes/{name}")


def test_cp_round_trip_and_hostile_archive(daemon: Daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "60"]})["Id"]
    c.post(f"/containers/{cid}/start")
    src = tmp_path / "hello.txt"
    src.write_text("from host\n")
    assert daemon.tug("cp", str(src), f"{cid}:/tmp/").returncode == 0
    assert daemon.tug("exec", cid, "cat", "/tmp/hello.txt").stdout == b"from host\n"
    out = tmp_path / "back.txt"
    assert daemon.tug("cp", f"{cid}:/tmp/hello.txt", str(out)).returncode == 0
    assert out.read_text() == "from host\n"
    # a symlink inside the container pointing at the host's /: writes must stay inside the container
    marker = tmp_path / "escape-marker"
    daemon.tug("exec", cid, "ln", "-s", str(tmp_path), "/tmp/evil")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"pwned\n"
        ti = tarfile.TarInfo("evil/escape-marker")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        ti2 = tarfile.TarInfo("../../../../" + str(tmp_path).lstrip("/") + "/escape-marker")
        ti2.size = len(data)
        tf.addfile(ti2, io.BytesIO(data))
    try:
        c.put(f"/containers/{cid}/archive", raw_body=buf.getvalue(), query={"path": "/tmp"})
    except InvalidArgument:
        pass
    assert not marker.exists()
    # the symlinked write landed inside the container, at the link's in-container meaning
    r = daemon.tug("exec", cid, "sh", "-c", f"cat {tmp_path}/escape-marker 2>/dev/null; true")
    assert not marker.exists()
    assert r.returncode == 0
    # reading through a symlink that points outside cannot read host files either
    daemon.tug("exec", cid, "ln", "-s", "/proc/1/root/etc/hostname", "/tmp/hostlink")
    c.delete(f"/containers/{cid}", query={"force": "1"})


def test_restart_policy_on_failure_and_always(daemon: Daemon) -> None:
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sh", "-c", "exit 2"],
                                        "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}})["Id"]
    c.post(f"/containers/{cid}/start")
    assert _wait_until(lambda: c.get(f"/containers/{cid}/json")["RestartCount"] == 2
                       and not c.get(f"/containers/{cid}/json")["State"]["Restarting"], 15)
    time.sleep(0.5)
    info = c.get(f"/containers/{cid}/json")
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 2 and not info["State"]["Running"]
    c.delete(f"/containers/{cid}")
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 0.2; exit 0"],
                                        "HostConfig": {"RestartPolicy": {"Name": "always"}}})["Id"]
    c.post(f"/containers/{cid}/start")
    assert _wait_until(lambda: c.get(f"/containers/{cid}/json")["RestartCount"] >= 2, 15)
    c.post(f"/containers/{cid}/stop", query={"t": "0"})
    n = c.get(f"/containers/{cid}/json")["RestartCount"]
    time.sleep(1.0)
    info = c.get(f"/containers/{cid}/json")
    assert info["RestartCount"] == n and not info["State"]["Running"]
    c.delete(f"/containers/{cid}", query={"force": "1"})


def test_live_restore_after_sigkill(daemon: Daemon) -> None:
    c = daemon.client()
    keep = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done"]},
                  query={"name": "survivor"})["Id"]
    short = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1; exit 7"]},
                   query={"name": "dies-meanwhile"})["Id"]
    c.post(f"/containers/{keep}/start")
    c.post(f"/containers/{short}/start")
    pid = c.get(f"/containers/{keep}/json")["State"]["Pid"]
    daemon.stop(signal.SIGKILL)
    time.sleep(2.0)  # `short` exits while no daemon runs; `keep` keeps writing into its FIFO
    assert os.path.exists(f"/proc/{pid}")
    daemon.start()
    c = daemon.client()
    info = c.get(f"/containers/{keep}/json")
    assert info["State"]["Running"] is True and info["State"]["Pid"] == pid
    assert _wait_until(lambda: c.get(f"/containers/{short}/json")["State"]["Status"] == "exited")
    assert c.get(f"/containers/{short}/json")["State"]["ExitCode"] == 7
    # output produced while the daemon was down is not lost, and logging goes on
    assert _wait_until(lambda: daemon.tug("logs", "survivor").stdout.count(b"\n") >= 15, 10)
    c.post(f"/containers/{keep}/stop", query={"t": "1"})
    c.delete(f"/containers/{keep}")
    c.delete(f"/containers/{short}")


def test_events_and_system_df(daemon: Daemon) -> None:
    c = daemon.client()
    t0 = time.time() - 1
    p = daemon.tug("run", "--rm", "--name", "evt", "busybox", "true")
    assert p.returncode == 0
    evs = list(c.json_stream("GET", "/events", query={"since": str(t0), "until": str(time.time() + 0.5),
                                                    "filters": json.dumps({"container": {"evt": True}})}))
    actions = [e["Action"] for e in evs]
    for a in ("create", "start", "die", "destroy"):
        assert a in actions
    df = c.get("/system/df")
    assert any("busybox:latest" in i["RepoTags"] for i in df["Images"])


def test_health_check_states(daemon: Daemon) -> None:
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"], "Healthcheck": {
        "Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 300_000_000, "Retries": 2}})["Id"]
    c.post(f"/containers/{cid}/start")
    assert _wait_until(lambda: c.get(f"/containers/{cid}/json")["State"]["Health"]["Status"] == "unhealthy", 10)
    assert "(unhealthy)" in daemon.tug("ps", "--format", "{{.Status}}", "--filter", f"id={cid}").stdout.decode()
    assert daemon.tug("exec", cid, "touch", "/tmp/ok").returncode == 0
    assert _wait_until(lambda: c.get(f"/containers/{cid}/json")["State"]["Health"]["Status"] == "healthy", 10)
    h = c.get(f"/containers/{cid}/json")["State"]["Health"]
    assert h["FailingStreak"] == 0 and h["Log"][-1]["ExitCode"] == 0 and len(h["Log"]) <= 5
    c.delete(f"/containers/{cid}", query={"force": "1"})


def test_restart_policy_holds_across_daemon_restart(daemon: Daemon) -> None:
    c = daemon.client()
    always = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "60"],
                                           "HostConfig": {"RestartPolicy": {"Name": "always"}}})["Id"]
    plain = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "60"]})["Id"]
    c.post(f"/containers/{always}/start")
    c.post(f"/containers/{plain}/start")
    pids = {cid: c.get(f"/containers/{cid}/json")["State"]["Pid"] for cid in (always, plain)}
    daemon.stop(signal.SIGKILL)
    for pid in pids.values():  # both die while no daemon runs
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    daemon.start()
    c = daemon.client()
    assert _wait_until(lambda: c.get(f"/containers/{always}/json")["State"]["Running"], 15)
    info = c.get(f"/containers/{always}/json")
    assert info["State"]["Pid"] != pids[always]
    plain_info = c.get(f"/containers/{plain}/json")
    assert plain_info["State"]["Status"] == "exited" and plain_info["State"]["ExitCode"] == 137
    c.delete(f"/containers/{always}", query={"force": "1"})
    c.delete(f"/containers/{plain}")
