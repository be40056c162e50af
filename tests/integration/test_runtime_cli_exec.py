"""`exec --cgroup`, writable cgroup mounts, `delete -f` with sub-cgroups made inside, and
`--debug` output (text and JSON logs) of run and exec."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from runtime_cli_fixtures import cleanup_cgroup_parent, cli_cmd
from runtime_fixtures import Bundles

from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)


def _writable_cgroup(c: dict) -> None:
    for m in c["mounts"]:
        if m["type"] == "cgroup":
            m["options"] = [o for o in m["options"] if o != "ro"]


def _need_memory_v1() -> None:
    from tugboat.runtime.cgroups import detect

    if "memory" not in detect().v1 or "cpu" not in detect().v1:
        pytest.skip("needs cgroup v1 memory and cpu hierarchies")


def _host_dir(rt: Runtime, cid: str, ctrl: str) -> str:
    paths = rt._sd(cid).load()["cgroup"]["paths"]
    return os.path.join("/sys/fs/cgroup", ctrl, paths[ctrl].lstrip("/"))


def test_cgroup_mount_is_read_only_only_when_asked(runtime: Runtime, bundles: Bundles) -> None:
    _need_memory_v1()
    runtime.run("x1", bundles.make(["sleep", "100"], edit=_writable_cgroup), detach=True)
    runtime.run("x2", bundles.make(["sleep", "100"]), detach=True)  # the default spec says "ro"
    code = runtime.exec("x1", {"args": ["mkdir", "/sys/fs/cgroup/memory/sub"], "cwd": "/"})
    assert code == 0
    assert os.path.isdir(os.path.join(_host_dir(runtime, "x1", "memory"), "sub"))
    code = runtime.exec("x2", {"args": ["mkdir", "/sys/fs/cgroup/memory/sub"], "cwd": "/"})
    assert code != 0
    assert not os.path.exists(os.path.join(_host_dir(runtime, "x2", "memory"), "sub"))


def test_exec_cgroup_joins_sub_cgroups_or_fails(runtime: Runtime, bundles: Bundles) -> None:
    _need_memory_v1()
    runtime.run("x3", bundles.make(["sleep", "100"], edit=_writable_cgroup), detach=True)
    cmd = cli_cmd(runtime.root)
    rel = runtime._sd("x3").load()["cgroup"]["paths"]["memory"]

    def ex(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, "exec", *args], capture_output=True, text=True, timeout=30)

    p = ex("--cgroup", "..", "x3", "true")
    assert p.returncode != 0 and " .. is not a sub cgroup path" in p.stderr
    p = ex("--cgroup", "nonexistent", "x3", "true")
    assert p.returncode != 0 and "/nonexistent/cgroup.procs: no such file" in p.stderr and " adding pid " in p.stderr
    p = ex("--cgroup", "cpu:nonexistent", "x3", "true")
    assert p.returncode != 0 and "/nonexistent/cgroup.procs: no such file" in p.stderr
    p = ex("--cgroup", "whaaat:/", "x3", "true")
    assert p.returncode != 0 and "unknown controller " in p.stderr
    p = ex("--cgroup", "/", "x3", "cat", "/proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    assert f":memory:{rel}\n" in p.stdout
    # sub-cgroups made from inside, then joined per controller
    p = ex("x3", "sh", "-euc", "mkdir -p /sys/fs/cgroup/memory/submem /sys/fs/cgroup/cpu/subcpu")
    assert p.returncode == 0, p.stderr
    p = ex("--cgroup", "memory:submem", "--cgroup", "cpu:subcpu", "x3", "cat", "/proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    assert f":memory:{rel}/submem\n" in p.stdout
    assert f":cpu:{rel}/subcpu\n" in p.stdout
    assert f":pids:{rel}\n" in p.stdout


def test_delete_force_removes_sub_cgroups_and_their_processes(runtime: Runtime, bundles: Bundles) -> None:
    _need_memory_v1()

    def edit(c: dict) -> None:
        _writable_cgroup(c)
        c["linux"]["namespaces"].append({"type": "cgroup"})

    runtime.run("x4", bundles.make(["sleep", "100"], edit=edit), detach=True)
    code = runtime.exec("x4", {"args": ["sh", "-euc", "sleep 1000 & mkdir /sys/fs/cgroup/memory/foo && "
                                        "echo $! > /sys/fs/cgroup/memory/foo/tasks"], "cwd": "/"})
    assert code == 0
    host = _host_dir(runtime, "x4", "memory")
    with open(os.path.join(host, "foo", "cgroup.procs")) as f:
        pid = int(f.read().split()[0])
    assert pid in runtime.ps("x4")  # ps counts the sub-cgroups' processes too
    runtime.delete("x4", force=True)
    assert not os.path.exists(host)
    try:
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().split(") ")[1][0] == "Z"  # killed; only its reaping may be pending
    except FileNotFoundError:
        pass


def test_debug_output_of_run_and_exec(bundles: Bundles, tmp_path) -> None:
    parent = f"/tugboat-test-{uuid.uuid4().hex[:8]}"
    root = str(tmp_path / "root")
    cmd = cli_cmd(root, "--cgroup-parent", parent)
    try:
        bundle = bundles.make(["echo", "Hello World"])
        p = subprocess.run([*cmd, "--debug", "run", "--bundle", bundle, "d1"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout == "Hello World\n"
        for phrase in ("level=debug", "nsexec container setup", "child process in init()",
                       "init: closing the pipe to signal completion"):
            assert phrase in p.stderr, p.stderr
        log = tmp_path / "log.json"
        p = subprocess.run([*cmd, "--log", str(log), "--log-format", "json", "--debug", "run", "--bundle", bundle, "d2"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "level=debug" not in p.stderr, p.stderr
        text = log.read_text()
        assert '"level":"debug"' in text and "init: closing the pipe to signal completion" in text
        assert all(json.loads(line)["level"] for line in text.splitlines())
        # exec
        subprocess.run([*cmd, "run", "-d", "--bundle", bundles.make(["sleep", "100"]), "d3"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        p = subprocess.run([*cmd, "--debug", "exec", "d3", "true"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        for phrase in ("nsexec container setup", "child process in init()", "setns_init: about to exec"):
            assert phrase in p.stderr, p.stderr
        # without --debug: not a word
        p = subprocess.run([*cmd, "exec", "d3", "true"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and p.stderr == ""
    finally:
        subprocess.run([*cmd, "delete", "-f", "d3"], capture_output=True, timeout=30)
        cleanup_cgroup_parent(parent)
