"""The real docker CLI (28.x) against the tugboat daemon (DOCKER_HOST=unix://<our socket>)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import engine_support
from conftest import require_binary
from engine_support import Daemon

daemon = engine_support.daemon


@pytest.fixture(scope="module")
def docker(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    exe = require_binary("docker")
    cfg = tmp_path_factory.mktemp("dockercfg")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(cfg))
    env.pop("DOCKER_CONTEXT", None)

    def run(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], input=input, capture_output=True, timeout=timeout, env=env)

    run.env = env  # type: ignore[attr-defined]
    run.exe = exe  # type: ignore[attr-defined]
    return run


def test_version_info_ps_images(docker) -> None:  # type: ignore[no-untyped-def]
    v = docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}")
    assert v.returncode == 0, v.stderr
    assert v.stdout.decode().strip() == "1.50 linux"
    i = docker("info", "--format", "{{.OSType}} {{.Driver}}")
    assert i.stdout.decode().strip() == "linux overlay2"
    assert docker("ps").returncode == 0
    im = docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "busybox:latest" in im.stdout.decode().split()


def test_run_rm_exit_code_and_streams(docker) -> None:  # type: ignore[no-untyped-def]
    p = docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"out\n"
    assert b"err\n" in p.stderr
    p = docker("run", "--rm", "busybox", "nosuchcmd")
    assert p.returncode == 127
    assert docker("ps", "-aq").stdout.strip() == b""


def test_run_detached_logs_exec_inspect_top_stats_stop_rm(docker) -> None:  # type: ignore[no-untyped-def]
    p = docker("run", "-d", "--name", "cli1", "-e", "GREETING=hello", "busybox", "sh", "-c",
               "echo $GREETING; trap 'exit 0' TERM; while true; do sleep 0.1; done")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.decode().strip()
    time.sleep(0.5)
    assert docker("logs", "cli1").stdout == b"hello\n"
    ex = docker("exec", "cli1", "sh", "-c", "echo $GREETING-exec; exit 5")
    assert ex.returncode == 5 and ex.stdout == b"hello-exec\n"
    assert docker("inspect", "-f", "{{.State.Status}} {{.Name}} {{.Config.Image}}", "cli1").stdout.decode().strip() == \
        "running /cli1 busybox"
    assert docker("inspect", "--format", "{{.Id}}", "cli1").stdout.decode().strip() == cid
    top = docker("top", "cli1")
    assert top.returncode == 0 and b"PID" in top.stdout and b"sh -c" in top.stdout
    st = docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "cli1")
    assert st.returncode == 0, st.stderr
    assert st.stdout.decode().startswith("cli1 ")
    ps = docker("ps", "--filter", "name=cli1", "--format", "{{.Names}} {{.Status}}")
    assert ps.stdout.decode().startswith("cli1 Up")
    t0 = time.time()
    assert docker("stop", "cli1").stdout.strip() == b"cli1"
    assert time.time() - t0 < 5  # the TERM trap exits promptly
    assert docker("inspect", "-f", "{{.State.ExitCode}}", "cli1").stdout.strip() == b"0"
    assert docker("rm", "cli1").returncode == 0
    miss = docker("rm", "-f", "cli1")
    assert miss.returncode == 0  # docker rm -f of a missing container exits 0
    miss = docker("inspect", "cli1")
    assert miss.returncode == 1 and miss.stdout.strip() == b"[]"
    miss = docker("container", "inspect", "cli1")
    assert miss.returncode == 1 and b"No such container: cli1" in miss.stderr


def test_kill_wait_attach(docker) -> None:  # type: ignore[no-untyped-def]
    docker("run", "-d", "--name", "cli2", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
    proc = subprocess.Popen([docker.exe, "attach", "cli2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=docker.env)
    waiter = subprocess.Popen([docker.exe, "wait", "cli2"], stdout=subprocess.PIPE, env=docker.env)
    time.sleep(0.8)
    assert docker("kill", "-s", "WINCH", "cli2").returncode == 0
    assert docker("inspect", "-f", "{{.State.Running}}", "cli2").stdout.strip() == b"true"
    assert docker("kill", "cli2").returncode == 0
    out, _ = proc.communicate(timeout=10)
    assert b"tick" in out
    wout, _ = waiter.communicate(timeout=10)
    assert wout.strip() == b"137"
    k = docker("kill", "cli2")
    assert k.returncode == 1 and b"is not running" in k.stderr
    docker("rm", "cli2")


def test_logs_follow_ends_when_container_exits(docker) -> None:  # type: ignore[no-untyped-def]
    docker("run", "-d", "--name", "cli3", "busybox", "sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.3; done")
    p = docker("logs", "-f", "cli3", timeout=20)
    assert p.returncode == 0
    assert p.stdout == b"n1\nn2\nn3\n"
    t = docker("logs", "-t", "--tail", "1", "cli3")
    line = t.stdout.decode()
    assert line.endswith(" n3\n") and line[4] == "-" and line.split(" ")[0].endswith("Z")
    docker("rm", "cli3")


def test_run_interactive_tty_under_pty(docker) -> None:  # type: ignore[no-untyped-def]
    require_binary("script")
    cmd = f"{docker.exe} run -it --rm busybox sh -c 'tty; exit 4'"
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=30,
                       env=docker.env, stdin=subprocess.DEVNULL)
    assert p.returncode == 4, p.stdout + p.stderr
    assert b"/dev/pts/0" in p.stdout


def test_exec_it_under_pty(docker) -> None:  # type: ignore[no-untyped-def]
    require_binary("script")
    docker("run", "-d", "--name", "cli4", "busybox", "sleep", "60")
    cmd = f"{docker.exe} exec -it cli4 sh -c 'tty; exit 6'"
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=30,
                       env=docker.env, stdin=subprocess.DEVNULL)
    assert p.returncode == 6, p.stdout + p.stderr
    assert b"/dev/pts/" in p.stdout
    docker("rm", "-f", "cli4")


def test_cp_both_ways(docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    docker("run", "-d", "--name", "cli5", "busybox", "sleep", "60")
    f = tmp_path / "in.txt"
    f.write_text("into the container\n")
    assert docker("cp", str(f), "cli5:/tmp/in.txt").returncode == 0
    assert docker("exec", "cli5", "cat", "/tmp/in.txt").stdout == b"into the container\n"
    docker("exec", "cli5", "sh", "-c", "mkdir -p /out && echo back > /out/b.txt")
    dest = tmp_path / "outdir"
    p = docker("cp", "cli5:/out", str(dest))
    assert p.returncode == 0, p.stderr
    assert (dest / "b.txt").read_text() == "back\n"
    miss = docker("cp", "cli5:/nope", str(tmp_path / "x"))
    assert miss.returncode == 1 and b"Could not find the file /nope" in miss.stderr
    docker("rm", "-f", "cli5")


def test_events_volumes_df_prune(docker) -> None:  # type: ignore[no-untyped-def]
    since = str(int(time.time()) - 1)
    assert docker("volume", "create", "cvol").stdout.strip() == b"cvol"
    ls = docker("volume", "ls", "--format", "{{.Name}}")
    assert "cvol" in ls.stdout.decode().split()
    assert docker("run", "--rm", "-v", "cvol:/d", "busybox", "sh", "-c", "echo x > /d/x").returncode == 0
    ev = docker("events", "--since", since, "--until", str(int(time.time()) + 1), "--format", "{{json .}}")
    kinds = [json.loads(line)["Action"] for line in ev.stdout.decode().splitlines()]
    assert "create" in kinds and "destroy" in kinds
    df = docker("system", "df")
    assert df.returncode == 0 and b"Local Volumes" in df.stdout
    assert docker("volume", "rm", "cvol").returncode == 0
    docker("create", "--name", "cli6", "busybox", "true")
    pr = docker("container", "prune", "-f")
    assert pr.returncode == 0, pr.stderr
    assert docker("ps", "-aq", "--filter", "name=cli6").stdout.strip() == b""


def test_image_endpoints(docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert docker("tag", "busybox", "localhost:5000/x/bb:v1").returncode == 0
    im = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    assert "localhost:5000/x/bb:v1" in im
    assert docker("image", "inspect", "-f", "{{.Os}}", "localhost:5000/x/bb:v1").stdout.strip() == b"linux"
    h = docker("history", "busybox")
    assert h.returncode == 0 and b"CREATED BY" in h.stdout
    tar = tmp_path / "bb.tar"
    assert docker("save", "-o", str(tar), "busybox").returncode == 0 and tar.stat().st_size > 100_000
    rm = docker("rmi", "localhost:5000/x/bb:v1")
    assert rm.returncode == 0 and b"Untagged: localhost:5000/x/bb:v1" in rm.stdout
    ld = docker("load", "-i", str(tar))
    assert ld.returncode == 0 and b"Loaded image: busybox:latest" in ld.stdout
    miss = docker("rmi", "nosuch:tag")
    assert miss.returncode == 1 and b"No such image: nosuch:tag" in miss.stderr


def test_rename_pause_diff_commit_export(docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    docker("run", "-d", "--name", "cli7", "busybox", "sh", "-c", "echo data > /made-here; sleep 60")
    time.sleep(0.5)
    assert docker("rename", "cli7", "cli7b").returncode == 0
    assert docker("pause", "cli7b").returncode == 0
    assert docker("inspect", "-f", "{{.State.Status}}", "cli7b").stdout.strip() == b"paused"
    assert docker("unpause", "cli7b").returncode == 0
    diff = docker("diff", "cli7b").stdout.decode().split("\n")
    assert "A /made-here" in diff
    c = docker("commit", "cli7b", "committed:v1")
    assert c.returncode == 0, c.stderr
    assert docker("run", "--rm", "--entrypoint", "cat", "committed:v1", "/made-here").stdout == b"data\n"
    out = tmp_path / "fs.tar"
    assert docker("export", "-o", str(out), "cli7b").returncode == 0
    import tarfile

    with tarfile.open(out) as tf:
        assert "made-here" in tf.getnames()
    docker("rm", "-f", "cli7b")
    docker("rmi", "committed:v1")


def test_network_container_shares_etc_files_and_log_driver_none(docker) -> None:  # type: ignore[no-untyped-def]
    # as dockerd: a container in another's network namespace uses that container's hostname,
    # hosts and resolv.conf files (and its hostname) instead of writing its own
    owner = docker("run", "-d", "--name", "netowner", "--hostname", "ownerhost", "busybox", "sleep", "60")
    assert owner.returncode == 0, owner.stderr
    joiner = docker("run", "-d", "--name", "netjoiner", "--network", "container:netowner", "busybox", "sleep", "60")
    assert joiner.returncode == 0, joiner.stderr
    try:
        fmt = "{{.HostnamePath}} {{.HostsPath}} {{.ResolvConfPath}} {{.LogPath}}"
        a = docker("inspect", "-f", fmt, "netowner").stdout.decode().split()
        b = docker("inspect", "-f", fmt, "netjoiner").stdout.decode().split()
        assert a[:3] == b[:3] and a[0].endswith("/hostname")
        assert a[3] != b[3]  # each its own log
        assert docker("exec", "netjoiner", "hostname").stdout == b"ownerhost\n"
        assert docker("exec", "netjoiner", "cat", "/etc/hostname").stdout == b"ownerhost\n"
        # the "none" logging driver: no log file, an empty LogPath, logs refused
        quiet = docker("run", "-d", "--log-driver", "none", "busybox", "sleep", "60")
        assert quiet.returncode == 0, quiet.stderr
        qid = quiet.stdout.decode().strip()
        assert docker("inspect", "-f", "{{.LogPath}}", qid).stdout == b"\n"
        lg = docker("logs", qid)
        assert lg.returncode != 0 and b"configured logging driver does not support reading" in lg.stderr
        docker("rm", "-f", qid)
    finally:
        docker("rm", "-f", "netjoiner", "netowner")


def test_container_processes_get_only_their_stdio(docker) -> None:  # type: ignore[no-untyped-def]
    # as with runc: PID 1 and exec'd processes hold fds 0-2 only (no copies of the daemon's
    # FIFOs or /dev/null at higher numbers)
    p = docker("run", "-d", "--name", "fds", "busybox", "sleep", "60")
    assert p.returncode == 0, p.stderr
    try:
        assert docker("exec", "fds", "ls", "/proc/1/fd").stdout.split() == [b"0", b"1", b"2"]
        # `; :` keeps sh from exec'ing ls, so $$ is the exec'd shell, not ls with its own dir fd
        r = docker("exec", "fds", "sh", "-c", "ls /proc/$$/fd; :")
        assert r.stdout.split() == [b"0", b"1", b"2"], r.stdout
        r = docker("exec", "-t", "fds", "sh", "-c", "ls /proc/$$/fd; :")
        assert r.stdout.split() == [b"0", b"1", b"2"], r.stdout
    finally:
        docker("rm", "-f", "fds")


def test_group_add(docker) -> None:  # type: ignore[no-untyped-def]
    # --group-add: gids and group names of the image's /etc/group become supplementary groups
    name = docker("run", "--rm", "busybox", "sh", "-c", "grep -m1 -v '^root:' /etc/group").stdout.decode()
    gname, gid = name.split(":")[0], name.split(":")[2]
    p = docker("run", "--rm", "--user", "1000:1000", "--group-add", "4321", "--group-add", gname, "busybox", "id", "-G")
    assert p.returncode == 0, p.stderr
    ids = p.stdout.decode().split()  # the primary gid, then the kernel's sorted supplementary list
    assert ids[0] == "1000" and sorted(ids[1:], key=int) == sorted(["4321", gid], key=int)
    bad = docker("run", "--rm", "--group-add", "no-such-group", "busybox", "true")
    assert bad.returncode != 0
    assert b"Unable to find group no-such-group" in bad.stderr
