"""`update` and the cgroup rules behind it, on the host's real cgroups (v1 here): memory and swap
ordering, CPU period/quota, pids, a paused container, BFQ weights, device rules, unified on v1."""

from __future__ import annotations

import os
import subprocess

import pytest
from runtime_cli_fixtures import cli_cmd
from runtime_fixtures import Bundles

from tugboat.errors import Conflict, InvalidArgument
from tugboat.runtime.api import Runtime
from tugboat.runtime.update import resources_from_flags

pytest_plugins = ("runtime_fixtures",)


def _v1(rt: Runtime, cid: str, ctrl: str, name: str) -> str:
    paths = rt._sd(cid).load()["cgroup"]["paths"]
    with open(os.path.join("/sys/fs/cgroup", ctrl, paths[ctrl].lstrip("/"), name)) as f:
        return f.read().strip()


def _need_v1(rt: Runtime) -> None:
    from tugboat.runtime.cgroups import detect

    m = detect()
    if not {"memory", "cpu", "pids", "freezer"} <= set(m.v1):
        pytest.skip("needs cgroup v1 memory, cpu, pids and freezer hierarchies")


def _limits(c: dict) -> None:
    c["linux"]["resources"].update({"memory": {"limit": 33554432, "reservation": 25165824},
                                    "cpu": {"shares": 100, "quota": 500000, "period": 1000000},
                                    "pids": {"limit": 20}})


def test_update_memory_swap_cpu_pids(runtime: Runtime, bundles: Bundles) -> None:
    _need_v1(runtime)
    runtime.run("u1", bundles.make(["sleep", "100"], edit=_limits), detach=True)
    has_swap = os.path.exists(os.path.join("/sys/fs/cgroup/memory", "memory.memsw.limit_in_bytes"))
    runtime.update("u1", resources_from_flags({"memory": "50M", "memory-reservation": "33554432"}))
    assert _v1(runtime, "u1", "memory", "memory.limit_in_bytes") == "52428800"
    assert _v1(runtime, "u1", "memory", "memory.soft_limit_in_bytes") == "33554432"
    if has_swap:
        runtime.update("u1", resources_from_flags({"memory-swap": "96468992"}))
        assert _v1(runtime, "u1", "memory", "memory.memsw.limit_in_bytes") == "96468992"
        # no memory limit: the memory+swap limit goes too, in the order the kernel accepts
        runtime.update("u1", resources_from_flags({"memory": "-1"}))
        unlimited = _v1(runtime, "u1", "memory", "memory.limit_in_bytes")
        assert int(unlimited) > 1 << 60
        assert _v1(runtime, "u1", "memory", "memory.memsw.limit_in_bytes") == unlimited
        # both at once, old limit below the new swap: swap first; then memory above the old swap
        runtime.update("u1", resources_from_flags({"memory": "30M", "memory-swap": "50M"}))
        runtime.update("u1", resources_from_flags({"memory": "60M", "memory-swap": "80M"}))
        assert _v1(runtime, "u1", "memory", "memory.limit_in_bytes") == str(60 << 20)
        assert _v1(runtime, "u1", "memory", "memory.memsw.limit_in_bytes") == str(80 << 20)
    # period alone keeps the quota; quota -1 removes it; shares
    runtime.update("u1", resources_from_flags({"cpu-period": "900000"}))
    assert _v1(runtime, "u1", "cpu", "cpu.cfs_period_us") == "900000"
    assert _v1(runtime, "u1", "cpu", "cpu.cfs_quota_us") == "500000"
    runtime.update("u1", resources_from_flags({"cpu-quota": "-1", "cpu-share": "200"}))
    assert _v1(runtime, "u1", "cpu", "cpu.cfs_quota_us") == "-1"
    assert _v1(runtime, "u1", "cpu", "cpu.shares") == "200"
    runtime.update("u1", resources_from_flags({"pids-limit": "-1"}))
    assert _v1(runtime, "u1", "pids", "pids.max") == "max"
    # the record follows, so `state`/a later update see the new values
    res = runtime._sd("u1").load()["config"]["linux"]["resources"]
    assert res["cpu"]["shares"] == 200 and res["pids"]["limit"] == -1 and res["memory"]["reservation"] == 33554432
    # a refused value is an error and changes nothing
    with pytest.raises(Exception, match=r"cpu\.cfs_period_us"):
        runtime.update("u1", {"cpu": {"period": 100}})
    assert _v1(runtime, "u1", "cpu", "cpu.cfs_period_us") == "900000"


def test_update_paused_container_stays_paused(runtime: Runtime, bundles: Bundles) -> None:
    _need_v1(runtime)
    runtime.run("u2", bundles.make(["sleep", "100"], edit=_limits), detach=True)
    runtime.pause("u2")
    runtime.update("u2", {"pids": {"limit": 30}})
    assert runtime.state("u2")["status"] == "paused"
    assert _v1(runtime, "u2", "pids", "pids.max") == "30"
    runtime.resume("u2")
    runtime.kill("u2", "KILL")
    runtime.wait("u2", timeout=10)
    with pytest.raises(Conflict, match="stopped"):
        runtime.update("u2", {"pids": {"limit": 5}})


def test_update_through_the_cli_flags_and_stdin(runtime: Runtime, bundles: Bundles) -> None:
    _need_v1(runtime)
    runtime.run("u3", bundles.make(["sleep", "100"], edit=_limits), detach=True)
    cmd = cli_cmd(runtime.root)
    p = subprocess.run([*cmd, "update", "u3", "--memory", "64M", "--cpu-quota", "30000", "--cpu-period", "100000"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert _v1(runtime, "u3", "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert _v1(runtime, "u3", "cpu", "cpu.cfs_quota_us") == "30000"
    p = subprocess.run([*cmd, "update", "-r", "-", "u3"], input='{"Memory": {"Limit": 33554432}, "pids": {"limit": 7}}',
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert _v1(runtime, "u3", "memory", "memory.limit_in_bytes") == "33554432"
    assert _v1(runtime, "u3", "pids", "pids.max") == "7"
    p = subprocess.run([*cmd, "update", "nope", "--memory", "1M"], capture_output=True, text=True)
    assert p.returncode != 0 and "does not exist" in p.stderr
    p = subprocess.run([*cmd, "update", "u3", "--memory", "lots"], capture_output=True, text=True)
    assert p.returncode != 0 and "invalid size" in p.stderr


def test_unified_resources_on_v1_are_invalid(runtime: Runtime, bundles: Bundles) -> None:
    _need_v1(runtime)

    def edit(c: dict) -> None:
        c["linux"]["resources"]["unified"] = {"memory.min": "131072"}

    with pytest.raises(InvalidArgument, match="invalid configuration"):
        runtime.run("u4", bundles.make(["true"], edit=edit), detach=True)
    assert runtime.list() == []


def test_device_rules_with_odd_access_letters(runtime: Runtime, bundles: Bundles) -> None:
    """runc's "minimal transition rules" config: "rwa" is "rw", and no deny after deny-all."""
    def edit(c: dict) -> None:
        c["linux"]["resources"]["devices"] = [
            {"allow": False, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwa"}]

    runtime.run("u5", bundles.make(["sleep", "100"], edit=edit), detach=True)
    lst = _v1(runtime, "u5", "devices", "devices.list").splitlines()
    assert "c 1:3 rwm" in lst and not any(line.startswith("c 1:11") for line in lst)
    for _ in range(3):
        runtime.update("u5", {"pids": {"limit": 30}})
    assert _v1(runtime, "u5", "devices", "devices.list").splitlines() == lst


def test_bfq_weights(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    """blockIO weights go to blkio.bfq.* when CFQ's blkio.weight is absent."""
    _need_v1(runtime)
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\0" * 4096)
    p = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"no loop device: {p.stderr.strip()}")
    dev = p.stdout.strip()
    try:
        sched = f"/sys/block/{os.path.basename(dev)}/queue/scheduler"
        try:
            with open(sched) as f:
                if "bfq" not in f.read():
                    pytest.skip("the BFQ scheduler is not available")
            with open(sched, "w") as f:
                f.write("bfq")
        except OSError as e:
            pytest.skip(f"cannot select BFQ: {e}")
        st = os.stat(dev)
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)

        def edit(c: dict) -> None:
            c["linux"]["resources"]["blockIO"] = {"weight": 333,
                                                  "weightDevice": [{"major": major, "minor": minor, "weight": 444}]}

        runtime.run("u6", bundles.make(["sleep", "100"], edit=edit), detach=True)
        paths = runtime._sd("u6").load()["cgroup"]["paths"]
        d = os.path.join("/sys/fs/cgroup/blkio", paths["blkio"].lstrip("/"))
        if os.path.exists(os.path.join(d, "blkio.weight")):
            pytest.skip("CFQ's blkio.weight exists: BFQ fallback not used")
        with open(os.path.join(d, "blkio.bfq.weight_device")) as f:
            weights = f.read()
        assert "default 333" in weights and f"{major}:{minor} 444" in weights
        runtime.update("u6", resources_from_flags({"blkio-weight": "500"}))
        with open(os.path.join(d, "blkio.bfq.weight")) as f:
            assert f.read().split()[-1] == "500"
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
