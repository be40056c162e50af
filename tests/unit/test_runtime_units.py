"""Unit tests of the runtime's plain logic (no root needed)."""

from __future__ import annotations

import errno
import json
import os
import resource

import pytest

from tugboat.errors import InvalidArgument
from tugboat.runtime import caps, fastjson, seccomp
from tugboat.runtime import kernel as k
from tugboat.runtime.api import parse_signal
from tugboat.runtime.cgroups import (
    Mounts,
    cpu,
    devices,
    memory,
    parse_mountinfo,
    parse_proc_cgroup,
    pids,
    resolve_path,
)
from tugboat.runtime.cgroups.v1 import V1Manager
from tugboat.runtime.cli import parse
from tugboat.runtime.process import plan_rlimits
from tugboat.runtime.rootfs import parse_mount_options, secure_join
from tugboat.runtime.spec import (
    DEFAULT_CAPABILITIES,
    default_spec,
    load_default_seccomp_profile,
    resolve_seccomp_profile,
)
from tugboat.runtime.state import StateDir, oci_state, rfc3339, status_of, validate_id

MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 26 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 26 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
30 26 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_default_spec_matches_docker_defaults() -> None:
    spec = default_spec(["sh"])
    assert spec["process"]["capabilities"]["bounding"] == DEFAULT_CAPABILITIES
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["effective"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]
    types = {n["type"] for n in spec["linux"]["namespaces"]}
    assert types == {"pid", "network", "ipc", "uts", "mount"}
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests[:2] == ["/proc", "/dev"] and "/dev/pts" in dests and "/sys/fs/cgroup" in dests
    sc = spec["linux"]["seccomp"]
    names = {n for rule in sc["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") for n in rule["names"]}
    assert {"read", "write", "execve"} <= names
    assert not {"keyctl", "kexec_load", "open_by_handle_at", "mount", "unshare", "bpf"} & names
    json.dumps(spec)  # serialisable
    rootless = default_spec(["sh"], rootless=True)
    assert {"type": "user"} in rootless["linux"]["namespaces"] and rootless["linux"]["uidMappings"]


def test_seccomp_profile_follows_capabilities() -> None:
    profile = load_default_seccomp_profile()
    with_admin = resolve_seccomp_profile(profile, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], arch="amd64")
    allowed = {n for r in with_admin["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert {"mount", "unshare", "setns"} <= allowed
    plain = resolve_seccomp_profile(profile, DEFAULT_CAPABILITIES, arch="amd64")
    clone_rules = [r for r in plain["syscalls"] if "clone" in r["names"]]
    assert clone_rules and all(r.get("args") for r in clone_rules)  # clone only without namespace flags


def test_seccomp_compiles_and_blocks_in_a_child() -> None:
    """Load a compiled filter in a forked child (no_new_privs, no root needed) and call syscalls."""
    prog = seccomp.compile_filter({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ERANGE,
             "args": [{"index": 0, "value": 0xFF00, "valueTwo": 0x1200, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["setpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOTTY,
             "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GT"}]},
        ],
    })
    assert len(prog) % 8 == 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        results = []
        try:
            k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
            k.seccomp_set_filter(prog)
            for fn in (lambda: os.getsid(0),
                       lambda: os.getpriority(1, 0),  # PRIO_PGRP: blocked
                       lambda: os.getpriority(0, 0),  # PRIO_PROCESS: allowed
                       lambda: os.getpgid(0x1234),  # (arg & 0xff00) == 0x1200: blocked
                       lambda: os.getpgid(0),  # allowed
                       lambda: os.setpgid(999999, 0),  # > 5: blocked with ENOTTY
                       ):
                try:
                    fn()
                    results.append(0)
                except OSError as e:
                    results.append(e.errno)
        except BaseException as e:
            results = [repr(e)]
        os.write(w, json.dumps(results).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 4096)
    os.waitpid(pid, 0)
    assert json.loads(data) == [errno.EACCES, errno.EDOM, 0, errno.ERANGE, 0, errno.ENOTTY]


def test_seccomp_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgument):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_NOPE"})
    with pytest.raises(InvalidArgument):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]})
    # extra architectures only add to the native one (libseccomp semantics)
    assert seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"]})


def test_seccomp_cache(tmp_path) -> None:
    sc = default_spec(["sh"])["linux"]["seccomp"]
    a = seccomp.compile_cached(sc, str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    assert seccomp.compile_cached(sc, str(tmp_path)) == a == seccomp.compile_filter(sc)


def test_caps_plan_intersects_bounding_set() -> None:
    bounding = caps.to_mask(["CAP_CHOWN", "CAP_KILL", "CAP_SETPCAP"])
    with pytest.raises(ValueError):
        caps.plan({"bounding": ["CAP_BOGUS"]}, bounding)
    plan, warnings = caps.plan({"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"],
                                "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
                                "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL", "CAP_CHOWN"]}, bounding)
    assert caps.to_names(plan["bounding"]) == ["CAP_CHOWN"]
    assert caps.to_names(plan["ambient"]) == ["CAP_KILL"]  # ambient needs permitted+inheritable
    assert any("CAP_SYS_RESOURCE" in w for w in warnings)


def test_rlimits_clamped_to_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard * 2 if hard != resource.RLIM_INFINITY else 2**20
    out, warnings = plan_rlimits([{"type": "RLIMIT_NOFILE", "soft": want, "hard": want}], can_raise=False)
    if hard == resource.RLIM_INFINITY:
        assert out == [(resource.RLIMIT_NOFILE, want, want)] and not warnings
    else:
        assert out == [(resource.RLIMIT_NOFILE, hard, hard)] and "clamped" in warnings[0]
    out, warnings = plan_rlimits([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}], can_raise=False)
    assert out == [(resource.RLIMIT_NOFILE, 10, min(20, hard))] and not warnings
    with pytest.raises(ValueError):
        plan_rlimits([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}], can_raise=True)


def test_mount_options() -> None:
    o = parse_mount_options(["nosuid", "noexec", "nodev", "ro", "rprivate", "mode=755", "size=65536k"])
    assert o.flags == k.MS_NOSUID | k.MS_NOEXEC | k.MS_NODEV | k.MS_RDONLY
    assert o.propagation == [k.MS_PRIVATE | k.MS_REC] and o.data == ["mode=755", "size=65536k"]
    # rro & co are not mount(2) flags: mount_setattr(AT_RECURSIVE) applies them to every sub-mount
    o = parse_mount_options(["rbind", "ro", "rw", "rro"])
    assert o.is_bind and o.flags & k.MS_REC and not o.flags & k.MS_RDONLY
    assert (o.rec_set, o.rec_clr) == (k.MOUNT_ATTR_RDONLY, 0)
    o = parse_mount_options(["rro", "rrw", "rnosuid", "rnoatime"])
    assert o.rec_set == k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NOATIME
    assert o.rec_clr == k.MOUNT_ATTR_RDONLY | k.MOUNT_ATTR__ATIME  # an atime mode clears the whole field


def test_secure_join_stays_inside(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("../../../../..", root / "up")
    os.symlink("etc", root / "rel")
    assert secure_join(str(root), "/abs") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "/up/x") == str(root / "x")
    assert secure_join(str(root), "../../x") == str(root / "x")
    assert secure_join(str(root), "rel/hosts") == str(root / "etc" / "hosts")


def test_cgroup_resource_files() -> None:
    res = {"memory": {"limit": 100, "swap": 200, "reservation": 50}, "cpu": {"shares": 1024, "quota": 50000,
           "period": 100000, "cpus": "0"}, "pids": {"limit": 0},
           "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]}
    assert memory.v1(res) == [("memory.limit_in_bytes", "100"), ("memory.memsw.limit_in_bytes", "200"),
                              ("memory.soft_limit_in_bytes", "50")]
    assert memory.v2(res) == [("memory.max", "100"), ("memory.swap.max", "100"), ("memory.low", "50")]
    assert cpu.v1(res) == [("cpu.shares", "1024"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]
    assert cpu.v2(res) == [("cpu.weight", "39"), ("cpu.max", "50000 100000")]
    assert pids.v1(res) == [("pids.max", "max")]
    dev = devices.v1(res)
    assert dev[0] == ("devices.deny", "a") and dev[1] == ("devices.allow", "c 1:3 rw")
    assert ("devices.allow", "c 136:* rwm") in dev


def test_mountinfo_and_paths() -> None:
    m = parse_mountinfo(MOUNTINFO)
    assert m.mode == "hybrid" and m.unified == "/sys/fs/cgroup/unified"
    assert m.v1 == {"cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd"}
    own = parse_proc_cgroup("4:memory:/process_api/x\n1:cpu:/\n0::/\n")
    assert own == {"memory": "/process_api/x", "cpu": "/", "": "/"}
    assert resolve_path(None, "c1", None, own)["memory"] == "/process_api/x/c1"  # runc: relative
    assert resolve_path(None, "c1", "/tugboat", own)["memory"] == "/tugboat/c1"  # engine parent
    assert resolve_path("/abs/p", "c1", "/tugboat", own)["cpu"] == "/abs/p"
    assert resolve_path("rel", "c1", None, own)["memory"] == "/process_api/x/rel"


def test_v1_manager_on_a_fake_tree(tmp_path) -> None:
    mounts = Mounts(v1={"memory": str(tmp_path / "memory"), "pids": str(tmp_path / "pids")})
    mgr = V1Manager(mounts, {"memory": "/tug/c1", "pids": "/tug/c1"})
    mgr.create()
    d = tmp_path / "memory" / "tug" / "c1"
    assert d.is_dir()
    for name in ("memory.limit_in_bytes", "cgroup.procs"):
        (d / name).write_text("")
    (tmp_path / "pids" / "tug" / "c1" / "pids.max").write_text("")
    (tmp_path / "pids" / "tug" / "c1" / "cgroup.procs").write_text("12\n34\n")
    warnings = mgr.apply({"memory": {"limit": 4096, "swap": 8192}, "pids": {"limit": 5}})
    assert (d / "memory.limit_in_bytes").read_text() == "4096"
    assert (tmp_path / "pids" / "tug" / "c1" / "pids.max").read_text() == "5"
    assert any("swap" in w for w in warnings)  # no memsw file in the fake tree
    assert mgr.pids() == [12, 34]
    assert mgr.describe()["version"] == 1


def test_state_and_ids(tmp_path) -> None:
    validate_id("abc-1.2_x+y")
    for bad in ("", "..", "a/b", "a b"):
        with pytest.raises(InvalidArgument):
            validate_id(bad)
    sd = StateDir(str(tmp_path), "c1")
    os.mkdir(sd.path)
    record = {"pid": 0, "bundle": "/b", "created": "x"}
    sd.save(record)
    assert sd.load() == record
    assert status_of(sd, record) == "stopped"
    assert oci_state(sd, record, "stopped")["exitStatus"] == -1
    with open(sd.exit_path, "w") as f:
        f.write("137 9 1700000000123456789\n")
    st = oci_state(sd, record, status_of(sd, record))
    assert st["exitStatus"] == 137 and st["exitSignal"] == 9 and st["finishedAt"] == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000000Z"


def test_signals() -> None:
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == parse_signal(9) == 9
    assert parse_signal("term") == 15
    with pytest.raises(InvalidArgument):
        parse_signal("NOPE")


def test_fastjson_roundtrip() -> None:
    doc = {"a": [1, 2.5, "é\n", None, True, False, {"b": {}}], "c": -3, "big": 2**64 - 1}
    assert fastjson.loads(fastjson.dumps(doc)) == doc
    assert json.loads(fastjson.dumps(doc)) == doc
    assert fastjson.loads(b'\xef\xbb\xbf {"x": [1e3]} ') == {"x": [1000.0]}
    with pytest.raises(ValueError):
        fastjson.loads("{} x")


def test_cli_parse() -> None:
    g, cmd, opts, pos = parse(["--root", "/r", "--log-format=json", "run", "-d", "--bundle", "/b", "id1"])
    assert g == {"root": "/r", "log-format": "json"} and cmd == "run" and opts["bundle"] == ["/b"] and opts["d"]
    assert pos == ["id1"]
    _, cmd, opts, pos = parse(["exec", "-t", "--env", "A=1", "c1", "--", "sh", "-c", "x"])
    assert cmd == "exec" and opts["t"] is True and opts["env"] == ["A=1"] and pos == ["c1", "sh", "-c", "x"]
    _, cmd, opts, pos = parse(["exec", "c1", "ls", "-l"])
    assert pos == ["c1", "ls", "-l"]
    _, cmd, opts, pos = parse(["kill", "c1", "KILL"])
    assert pos == ["c1", "KILL"]
