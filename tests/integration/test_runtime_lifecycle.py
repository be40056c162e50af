"""Lifecycle through the Python API and the tug-runtime CLI: create/start/state/kill/delete, exec,
pause/resume, exit status recorded by the monitor, hooks, console socket, user namespaces."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from runtime_fixtures import Bundles, run_capture

from tugboat.errors import Conflict, NotFound
from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def _cgroup_exists(record_paths: dict) -> bool:
    return any(os.path.isdir(os.path.join(f"/sys/fs/cgroup/{h}", p.lstrip("/"))) for h, p in record_paths.items() if h == "memory")


def test_create_start_state_kill_delete(runtime: Runtime, bundles: Bundles) -> None:
    bundle = bundles.make(["sleep", "100"])
    st = runtime.create("c1", bundle)
    assert st["status"] == "created" and st["pid"] > 0 and st["bundle"] == bundle
    with pytest.raises(Conflict):
        runtime.create("c1", bundle)
    assert runtime.state("c1")["status"] == "created"
    runtime.start("c1")
    st = runtime.state("c1")
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    assert runtime.ps("c1") == [st["pid"]]
    with pytest.raises(Conflict):
        runtime.delete("c1")
    runtime.kill("c1", "SIGKILL")  # pid 1 ignores signals it has no handler for, except KILL/STOP
    assert runtime.wait("c1", timeout=10) == 128 + 9
    st = runtime.state("c1")
    assert st["status"] == "stopped" and st["exitStatus"] == 137 and st["exitSignal"] == 9
    mem_dir = f"/sys/fs/cgroup/memory{runtime.cgroup_parent}/c1"
    assert os.path.isdir(mem_dir)
    runtime.delete("c1")
    assert not os.path.isdir(mem_dir)
    with pytest.raises(NotFound):
        runtime.state("c1")
    assert runtime.list() == []


def test_exit_status_survives_the_caller(runtime: Runtime, bundles: Bundles) -> None:
    """A detached container outlives the process that created it; its exit status is recorded."""
    bundle = bundles.make(["sh", "-c", "sleep 0.3; exit 7"])
    code = (
        f"import sys; sys.path.insert(0, {SRC!r}); from tugboat.runtime.api import Runtime; "
        f"rt = Runtime({runtime.root!r}, cgroup_parent={runtime.cgroup_parent!r}); "
        f"rt.run('d1', {bundle!r}, detach=True); import os; os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    assert runtime.state("d1")["status"] == "running"
    assert runtime.wait("d1", timeout=10) == 7
    st = runtime.state("d1")
    assert st["status"] == "stopped" and st["exitStatus"] == 7 and st["finishedAt"].endswith("Z")
    runtime.delete("d1")


def test_monitor_is_small(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("m1", bundles.make(["sleep", "100"]), detach=True)
    with open(os.path.join(runtime.root, "m1", "state.json")) as f:
        mon = json.load(f)["monitorPid"]
    for _ in range(200):  # A execs the monitor right after learning the init's pid
        with open(f"/proc/{mon}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        if status["Name"].strip() == "tug-monitor":
            break
        time.sleep(0.01)
    rss_kib = int(status["VmRSS"].split()[0])
    assert status["Name"].strip() == "tug-monitor"
    assert rss_kib < 2048, rss_kib
    runtime.delete("m1", force=True)


def test_exec_in_running_container(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    runtime.run("e1", bundles.make(["sleep", "100"]), detach=True)
    out = os.open(tmp_path / "exec.out", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        code = runtime.exec("e1", {"args": ["sh", "-c", "echo in=$(hostname) pid1=$(cat /proc/1/comm); exit 3"],
                                   "cwd": "/", "env": ["PATH=/bin"]}, stdout=out, stderr=out)
    finally:
        os.close(out)
    assert code == 3
    assert (tmp_path / "exec.out").read_text().strip() == "in=tugtest pid1=sleep"
    pid = runtime.exec("e1", {"args": ["sleep", "50"], "cwd": "/", "env": ["PATH=/bin"]}, detach=True)
    assert pid > 0
    assert pid in runtime.ps("e1")
    runtime.delete("e1", force=True)


def test_pause_resume(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("p1", bundles.make(["sleep", "100"]), detach=True)
    runtime.pause("p1")
    assert runtime.state("p1")["status"] == "paused"
    pid = runtime.state("p1")["pid"]
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split(") ")[1][0] in "DS"
    runtime.resume("p1")
    assert runtime.state("p1")["status"] == "running"
    runtime.delete("p1", force=True)


def test_kill_all_and_stats(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["linux"]["resources"]["memory"] = {"limit": 64 << 20}

    runtime.run("k1", bundles.make(["sh", "-c", "sleep 100 & sleep 100"], edit=edit), detach=True)
    for _ in range(100):
        if len(runtime.ps("k1")) >= 3:
            break
        time.sleep(0.01)
    stats = runtime.stats("k1")
    assert stats["memory_limit"] == 64 << 20 and stats["pids_current"] >= 2
    runtime.kill("k1", 9, all=True)
    assert runtime.wait("k1", timeout=10) == 137
    runtime.delete("k1")


def test_failed_create_leaves_nothing(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/data", "type": "bind", "source": "/nonexistent-src", "options": ["bind"]})

    with pytest.raises(Exception) as err:
        runtime.create("f1", bundles.make(["true"], edit=edit))
    assert "/nonexistent-src" in str(err.value) and "/data" in str(err.value)
    assert not os.path.exists(os.path.join(runtime.root, "f1"))
    assert not os.path.isdir(f"/sys/fs/cgroup/memory{runtime.cgroup_parent}/f1")
    with pytest.raises(Exception) as err:
        runtime.create("f2", bundles.make(["no-such-binary"]))
    assert "executable file not found" in str(err.value)
    assert not os.path.exists(os.path.join(runtime.root, "f2"))


def test_hooks_run_in_order(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    log = tmp_path / "hooks.log"

    def hook(name: str, target: str = str(log)) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > /dev/null; echo {name} >> {target}"]}

    def edit(c: dict) -> None:
        c["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
        # startContainer runs inside the container (after pivot_root): its /bin/sh is busybox
        c["hooks"]["startContainer"] = [hook("startContainer", "/tmp/hook.log")]

    bundle = bundles.make(["true"], edit=edit, copy_rootfs=True)
    code, _ = run_capture(runtime, bundle)
    assert code == 0
    assert log.read_text().split() == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    with open(os.path.join(bundle, "rootfs", "tmp", "hook.log")) as f:
        assert f.read().split() == ["startContainer"]


def test_failing_hook_fails_create(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]}

    with pytest.raises(Exception) as err:
        runtime.create("hk", bundles.make(["true"], edit=edit))
    assert "error running hook #0 (createRuntime /bin/sh): exit status 3: nope" in str(err.value)
    assert runtime.list() == []


def test_console_socket_passes_pty(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    sock_path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    got: dict = {}

    def accept() -> None:
        conn, _ = srv.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        got["name"], got["fd"] = msg, fds[0]
        conn.close()

    t = threading.Thread(target=accept)
    t.start()

    def edit(c: dict) -> None:
        c["process"]["terminal"] = True

    bundle = bundles.make(["sh", "-c", "tty; echo done"], edit=edit)
    rt = Runtime(runtime.root, cgroup_parent=runtime.cgroup_parent, warn=lambda m: None)
    rt.create("tty1", bundle, console_socket=sock_path)
    t.join(10)
    rt.start("tty1")
    data = b""
    while b"done" not in data:
        try:
            chunk = os.read(got["fd"], 1024)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    assert rt.wait("tty1", timeout=10) == 0
    rt.delete("tty1")
    os.close(got["fd"])
    srv.close()
    assert got["name"].startswith(b"/dev/pts/")
    assert b"/dev/pts/0" in data, data


def test_exec_with_terminal(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    runtime.run("tt", bundles.make(["sleep", "100"]), detach=True, stdout=os.open(os.devnull, os.O_WRONLY))
    sock_path = str(tmp_path / "exec-console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    got: dict = {}

    def accept() -> None:
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        got["fd"] = fds[0]
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    rt = Runtime(runtime.root, cgroup_parent=runtime.cgroup_parent, warn=lambda m: None)
    pid = rt.exec("tt", {"args": ["sh", "-c", "tty; sleep 0.2"], "cwd": "/", "env": ["PATH=/bin"], "terminal": True},
                  detach=True, console_socket=sock_path)
    t.join(10)
    assert pid > 0
    data = b""
    while b"\n" not in data:
        chunk = os.read(got["fd"], 1024)
        if not chunk:
            break
        data += chunk
    os.close(got["fd"])
    srv.close()
    assert data.startswith(b"/dev/pts/"), data
    rt.delete("tt", force=True)


def test_user_namespace(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["type"] not in ("cgroup",)]

    bundle = bundles.make(["sh", "-c", "id -u; cat /proc/self/uid_map"], edit=edit)
    # the container's root (host uid 100000) must be able to reach the rootfs: open up the
    # 0700 pytest temp dirs above it (as one must for runc)
    for path in (bundle, bundles.template):
        d = os.path.dirname(path)
        while d not in ("/", "/tmp"):
            os.chmod(d, os.stat(d).st_mode | 0o011)
            d = os.path.dirname(d)
    code, out = run_capture(runtime, bundle)
    assert code == 0, out
    lines = out.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"], out


def test_join_namespace_by_path(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("ns1", bundles.make(["sleep", "100"]), detach=True)
    pid = runtime.state("ns1")["pid"]

    def edit(c: dict) -> None:
        c["linux"]["namespaces"] = [
            {"type": "network", "path": f"/proc/{pid}/ns/net"} if n["type"] == "network" else n
            for n in c["linux"]["namespaces"]
        ]

    _code, out = run_capture(runtime, bundles.make(["readlink", "/proc/self/ns/net"], edit=edit))
    assert out.strip() == os.readlink(f"/proc/{pid}/ns/net"), out
    runtime.delete("ns1", force=True)


def test_rlimits_clamped_with_warning(runtime: Runtime, bundles: Bundles) -> None:
    warnings: list[str] = []
    rt = Runtime(runtime.root, cgroup_parent=runtime.cgroup_parent, warn=warnings.append)
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def edit(c: dict) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard * 4, "hard": hard * 4}]

    code, out = run_capture(rt, bundles.make(["sh", "-c", "ulimit -n; ulimit -Hn"], edit=edit))
    assert code == 0, out
    if os.path.exists("/proc/self/status") and "CAP_SYS_RESOURCE" not in " ".join(warnings):
        pass
    assert out.split() == [str(hard), str(hard)] or out.split() == [str(hard * 4)] * 2, out


def test_api_from_a_threaded_caller_uses_helper(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    """With other threads alive, forking verbs go through a single-threaded helper process."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        out = os.open(tmp_path / "h.out", os.O_WRONLY | os.O_CREAT, 0o644)
        st = runtime.create("h1", bundles.make(["sh", "-c", "echo via-helper"]), stdout=out, stderr=out)
        os.close(out)
        assert st["status"] == "created"
        runtime.start("h1")
        assert runtime.wait("h1", timeout=10) == 0
        assert (tmp_path / "h.out").read_text().strip() == "via-helper"
        runtime.delete("h1")
        with pytest.raises(Exception) as err:
            runtime.create("h2", bundles.make(["no-such-binary"]))
        assert "executable file not found" in str(err.value)
        runtime.run("h3", bundles.make(["sleep", "100"]), detach=True, stdout=os.open(os.devnull, os.O_WRONLY))
        proc = {"args": ["sh", "-c", "exit 6"], "cwd": "/", "env": ["PATH=/bin"]}
        assert runtime.exec("h3", proc) == 6
        pid = runtime.exec("h3", dict(proc, args=["sleep", "30"]), detach=True)
        assert pid in runtime.ps("h3")
        runtime.delete("h3", force=True)
    finally:
        stop.set()
        t.join()


def test_cli_run_and_lifecycle(tmp_path, bundles: Bundles) -> None:
    root = str(tmp_path / "cli-root")
    launcher = [sys.executable, "-I", "-S", "-c",
                f"import sys; sys.path.insert(0, {SRC!r}); from tugboat.runtime.cli import main; sys.exit(main())",
                "--root", root]
    bundle = bundles.make(["sh", "-c", "echo hello; exit 5"])
    p = subprocess.run([*launcher, "run", "--bundle", bundle, "r1"], capture_output=True, text=True)
    assert p.returncode == 5, p.stderr
    assert p.stdout == "hello\n"
    bundle = bundles.make(["sleep", "100"])
    subprocess.run([*launcher, "create", "--bundle", bundle, "--pid-file", str(tmp_path / "pid"), "r2"], check=True)
    state = json.loads(subprocess.run([*launcher, "state", "r2"], capture_output=True, text=True, check=True).stdout)
    assert state["status"] == "created" and state["pid"] == int((tmp_path / "pid").read_text())
    subprocess.run([*launcher, "start", "r2"], check=True)
    listing = subprocess.run([*launcher, "list", "--format", "json"], capture_output=True, text=True, check=True)
    assert [s["id"] for s in json.loads(listing.stdout)] == ["r2"]
    p = subprocess.run([*launcher, "exec", "r2", "sh", "-c", "exit 4"], capture_output=True, text=True)
    assert p.returncode == 4, p.stderr
    subprocess.run([*launcher, "kill", "r2", "KILL"], check=True)
    for _ in range(200):
        state = json.loads(subprocess.run([*launcher, "state", "r2"], capture_output=True, text=True).stdout)
        if state["status"] == "stopped":
            break
        time.sleep(0.01)
    assert state["status"] == "stopped"
    subprocess.run([*launcher, "delete", "r2"], check=True)
    p = subprocess.run([*launcher, "state", "r2"], capture_output=True, text=True)
    assert p.returncode == 1 and "does not exist" in p.stderr
