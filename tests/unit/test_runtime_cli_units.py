"""tug-runtime's runc-compatible command line (help, version, argument checks) and the pure parts
of update/events/cgroups: sizes, durations, flag and JSON deltas, device and blkio rules."""

from __future__ import annotations

import os

import pytest

from tugboat.errors import InvalidArgument
from tugboat.runtime import cli
from tugboat.runtime.cgroups import Mounts, blkio, devices, normalize_resources
from tugboat.runtime.cgroups.v1 import V1Manager
from tugboat.runtime.events import parse_duration
from tugboat.runtime.update import merge, parse_size, resources_from_flags, resources_from_json


def test_parse_size_units_like_runc() -> None:
    assert parse_size("67108864") == 67108864
    assert parse_size("50M") == 52428800
    assert parse_size("50m") == 52428800
    assert parse_size("1g") == 1 << 30
    assert parse_size("512KiB") == 512 << 10
    assert parse_size("1.5k") == 1536
    assert parse_size("-1") == -1
    for bad in ("", "abc", "-2", "10X"):
        with pytest.raises(InvalidArgument):
            parse_size(bad)


def test_flag_delta_skips_zero_and_keeps_minus_one() -> None:
    delta = resources_from_flags({"memory": "50M", "memory-swap": "-1", "cpu-quota": "-1", "cpu-period": "0",
                                  "pids-limit": "-1", "cpuset-cpus": "1", "blkio-weight": "500", "cpu-share": "200"})
    assert delta == {"memory": {"limit": 52428800, "swap": -1}, "cpu": {"quota": -1, "cpus": "1", "shares": 200},
                     "pids": {"limit": -1}, "blockIO": {"weight": 500}}
    assert resources_from_flags({"pids-limit": "0"}) == {}
    with pytest.raises(InvalidArgument):
        resources_from_flags({"cpu-quota": "lots"})
    with pytest.raises(InvalidArgument, match="RDT"):
        resources_from_flags({"l3-cache-schema": "L3:0=f"})


def test_json_delta_is_case_insensitive_like_go() -> None:
    delta = resources_from_json({"CPU": {"Cpus": "1", "Shares": 0}, "memory": {"limit": 33554432, "swap": 0},
                                 "Pids": {"Limit": 20}})
    assert delta == {"cpu": {"cpus": "1"}, "memory": {"limit": 33554432}, "pids": {"limit": 20}}
    with pytest.raises(InvalidArgument):
        resources_from_json([1, 2])
    # "cpu" and "CPU" in one config are merged, as Go decodes both into the same struct
    assert normalize_resources({"cpu": {"shares": 5}, "CPU": {"Cpus": "0"}}) == {"cpu": {"shares": 5, "cpus": "0"}}
    assert normalize_resources({"blockio": {"WeightDevice": [{"Major": 7, "minor": 0, "weight": 3}]}}) == {
        "blockIO": {"weightDevice": [{"major": 7, "minor": 0, "weight": 3}]}}
    assert normalize_resources({"unified": {"Memory.Max": "1"}}) == {"unified": {"Memory.Max": "1"}}


def test_merge_keeps_untouched_fields() -> None:
    old = {"memory": {"limit": 1, "reservation": 2}, "devices": [{"allow": False, "access": "rwm"}]}
    assert merge(old, {"memory": {"limit": 5}, "pids": {"limit": 3}}) == {
        "memory": {"limit": 5, "reservation": 2}, "devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 3}}


def test_device_rules_keep_valid_letters_and_skip_redundant_denies() -> None:
    rules = [{"allow": False, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwa"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wwr"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "x"},
             {"allow": False, "type": "b", "major": 7, "minor": 0, "access": "m"}]
    writes = devices.v1({"devices": rules})
    assert writes[:3] == [("devices.deny", "a"), ("devices.allow", "c 1:3 rw"), ("devices.deny", "b 7:0 m")]


def test_blkio_weights_and_throttles() -> None:
    res = {"blockIO": {"weight": 333, "weightDevice": [{"major": 7, "minor": 1, "weight": 444}],
                       "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]}}
    assert blkio.v1(res) == [("blkio.weight", "333"), ("blkio.weight_device", "7:1 444"),
                             ("blkio.throttle.read_bps_device", "8:0 1048576")]
    assert ("io.max", "8:0 rbps=1048576") in blkio.v2(res)
    assert blkio.v1({}) == []


def test_v1_bfq_fallback_and_unified_refused_on_a_fake_tree(tmp_path) -> None:
    mounts = Mounts(v1={"blkio": str(tmp_path / "blkio")})
    mgr = V1Manager(mounts, {"blkio": "/c"})
    mgr.create()
    d = tmp_path / "blkio" / "c"
    for name in ("blkio.bfq.weight", "blkio.bfq.weight_device"):
        (d / name).write_text("")
    mgr.apply({"blockIO": {"weight": 333}})
    assert (d / "blkio.bfq.weight").read_text() == "333"
    assert not (d / "blkio.weight").exists()
    with pytest.raises(ValueError, match="invalid configuration"):
        mgr.apply({"unified": {"memory.min": "131072"}})


def test_v1_sub_cgroups_and_recursive_pids_on_a_fake_tree(tmp_path) -> None:
    mounts = Mounts(v1={"memory": str(tmp_path / "memory"), "cpu": str(tmp_path / "cpu")})
    mgr = V1Manager(mounts, {"memory": "/c", "cpu": "/c"})
    mgr.create()
    os.makedirs(tmp_path / "memory" / "c" / "sub")
    (tmp_path / "memory" / "c" / "cgroup.procs").write_text("1\n")
    (tmp_path / "memory" / "c" / "sub" / "cgroup.procs").write_text("2\n")
    (tmp_path / "cpu" / "c" / "cgroup.procs").write_text("1\n")
    assert mgr.pids() == [1, 2]
    files = mgr.procs_files_for({"memory": "sub"})
    assert str(tmp_path / "memory" / "c" / "sub" / "cgroup.procs") in files
    assert str(tmp_path / "cpu" / "c" / "cgroup.procs") in files
    with pytest.raises(FileNotFoundError, match=r"adding pid to cgroups: open .*/nope/cgroup\.procs: no such file"):
        mgr.procs_files_for({"": "nope"})
    with pytest.raises(ValueError, match="unknown controller"):
        mgr.procs_files_for({"whaaat": ""})


def test_sub_cgroup_flag_parsing() -> None:
    assert cli._sub_cgroups([]) is None
    assert cli._sub_cgroups(["memory:submem", "cpu,cpuacct:subcpu"]) == {"memory": "submem", "cpu": "subcpu",
                                                                         "cpuacct": "subcpu"}
    assert cli._sub_cgroups(["/"]) == {"": ""}
    assert cli._sub_cgroups(["a/b/"]) == {"": "a/b"}
    with pytest.raises(cli.UsageError, match=r" \.\. is not a sub cgroup path"):
        cli._sub_cgroups([".."])


def test_go_durations() -> None:
    assert parse_duration("5s") == 5
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("1m30s") == 90
    assert parse_duration("250us") == pytest.approx(0.00025)
    for bad in ("", "5", "s", "0s", "1x"):
        with pytest.raises(InvalidArgument):
            parse_duration(bad)


def test_help_layout_like_runc(capsys) -> None:
    assert cli._main(["-h"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "NAME:" and "runc - Open Container Initiative runtime" in lines[1]
    assert lines[1].strip().startswith("tug-runtime")
    for cmd in ("checkpoint", "delete", "events", "exec", "kill", "list", "pause", "restore", "resume", "spec",
                "start", "run", "state", "update"):
        assert cli._main([cmd, "-h"]) == 0, cmd
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "NAME:" and f"tug-runtime {cmd}, in place of runc {cmd} - " in lines[1]
    assert cli._main(["list", "--help"]) == 0
    assert capsys.readouterr().out.startswith("NAME:\n")
    assert cli._main(["foo", "-h"]) != 0
    assert "No help topic for 'foo'" in capsys.readouterr().err
    assert cli._main(["help", "update"]) == 0
    assert "update container resource constraints" in capsys.readouterr().out


def test_version_is_ours_first(capsys) -> None:
    assert cli._main(["-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tug-runtime version 0.1.0") and "runc version 1.1.5" in lines[0]
    assert lines[1].startswith("commit:") and lines[2] == "spec: 1.0.2"


def test_flags_after_the_id_except_for_exec_and_ps() -> None:
    _, cmd, opts, pos = cli.parse(["update", "c1", "--memory", "-1", "--pids-limit=5"])
    assert (cmd, pos, opts["memory"], opts["pids-limit"]) == ("update", ["c1"], ["-1"], ["5"])
    _, _, opts, pos = cli.parse(["update", "-r", "-", "c1"])
    assert opts["r"] == ["-"] and pos == ["c1"]
    _, _, opts, pos = cli.parse(["exec", "c1", "ls", "-la"])
    assert pos == ["c1", "ls", "-la"] and not opts
    _, _, opts, pos = cli.parse(["ps", "c1", "-e", "-x"])
    assert pos == ["c1", "-e", "-x"]


def test_checkpoint_arguments_checked_then_refused(tmp_path, capsys) -> None:
    root = str(tmp_path / "root")
    assert cli._main(["--root", root, "checkpoint", "--parent-path", str(tmp_path / "p"), "c1"]) != 0
    assert "--parent-path must be relative" in capsys.readouterr().err
    assert cli._main(["--root", root, "checkpoint", "--image-path", str(tmp_path), "--parent-path", "p", "c1"]) != 0
    assert "invalid --parent-path" in capsys.readouterr().err
    os.mkdir(tmp_path / "p")
    assert cli._main(["--root", root, "checkpoint", "--image-path", str(tmp_path), "--parent-path", "p", "c1"]) != 0
    assert "needs CRIU" in capsys.readouterr().err
    assert cli._main(["--root", root, "restore", "c1"]) != 0
    assert "needs CRIU" in capsys.readouterr().err


def test_json_log_lines_are_compact(tmp_path) -> None:
    path = tmp_path / "log"
    cli._Log(str(path), "json").write("debug", "hello")
    line = path.read_text()
    assert line.startswith('{"level":"debug","msg":"hello","time":"') and line.endswith("}\n")
    cli._Log(str(path), "text").write("debug", "x")
    assert 'level=debug msg="x"' in path.read_text().splitlines()[1]


def test_v2_unified_map_and_sub_cgroup_on_a_fake_tree(tmp_path) -> None:
    from tugboat.runtime.cgroups.v2 import V2Manager

    mgr = V2Manager(str(tmp_path), "/c")
    os.makedirs(tmp_path / "c" / "sub")
    for name in ("cpu.max", "cpu.weight", "pids.max", "cgroup.procs"):
        (tmp_path / "c" / name).write_text("")
    (tmp_path / "c" / "sub" / "cgroup.procs").write_text("9\n")
    mgr.apply({"pids": {"limit": 20}, "unified": {"pids.max": "10", "cpu.max": "max 100000"}})
    assert (tmp_path / "c" / "pids.max").read_text() == "10"  # unified wins over the converted field
    assert (tmp_path / "c" / "cpu.max").read_text() == "max 100000"
    with pytest.raises(ValueError, match="invalid configuration"):
        mgr.apply({"unified": {"memory.min": "1"}})
    with pytest.raises(ValueError, match="invalid configuration"):
        mgr.apply({"unified": {"../escape": "1"}})
    assert mgr.procs_files_for({"": "sub"}) == [str(tmp_path / "c" / "sub" / "cgroup.procs")]
    with pytest.raises(ValueError, match="unknown controller"):
        mgr.procs_files_for({"memory": "sub"})
    assert mgr.pids() == [9]


def test_v2_update_keeps_the_other_half_of_a_pair() -> None:
    from tugboat.runtime.update import complete_for_v2

    old = {"cpu": {"quota": 500000, "period": 1000000}, "memory": {"limit": 100}}
    assert complete_for_v2(old, {"cpu": {"period": 900000}}) == {"cpu": {"period": 900000, "quota": 500000}}
    assert complete_for_v2(old, {"cpu": {"quota": -1, "period": 5}}) == {"cpu": {"quota": -1, "period": 5}}
    assert complete_for_v2(old, {"memory": {"swap": 300}}) == {"memory": {"swap": 300, "limit": 100}}
    assert complete_for_v2({}, {"cpu": {"quota": 3000}}) == {"cpu": {"quota": 3000}}


def test_v2_oom_watch_follows_memory_events(tmp_path) -> None:
    import select

    from tugboat.runtime.cgroups.v2 import V2Manager
    from tugboat.runtime.events import OOMWatch

    os.makedirs(tmp_path / "c")
    events = tmp_path / "c" / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    watch = OOMWatch(V2Manager(str(tmp_path), "/c"))
    try:
        assert watch.fd is not None  # inotify, not polling
        assert watch.check(False) == 0
        events.write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
        assert select.select([watch.fd], [], [], 2)[0]
        assert watch.check(True) == 2
        assert watch.check(False) == 0
        assert not watch.gone()
        events.unlink()
        os.rmdir(tmp_path / "c")
        assert watch.gone()
    finally:
        watch.close()


def test_hugetlb_and_net_modules_and_missing_controller_warnings(tmp_path) -> None:
    from tugboat.runtime.cgroups import hugetlb, net

    res = {"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
           "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]}}
    assert hugetlb.v1(res) == [("hugetlb.2MB.limit_in_bytes", "4194304")]
    assert hugetlb.v2(res) == [("hugetlb.2MB.max", "4194304")]
    assert net.net_cls.v1(res) == [("net_cls.classid", "1048577")]
    assert net.net_prio.v1(res) == [("net_prio.ifpriomap", "eth0 500")]
    # co-mounted net_cls,net_prio: both written in the one directory; hugetlb not mounted: a warning
    shared = str(tmp_path / "net_cls,net_prio")
    mgr = V1Manager(Mounts(v1={"net_cls": shared, "net_prio": shared}), {"net_cls": "/c", "net_prio": "/c"})
    mgr.create()
    for name in ("net_cls.classid", "net_prio.ifpriomap"):
        (tmp_path / "net_cls,net_prio" / "c" / name).write_text("")
    warnings = mgr.apply(res)
    assert (tmp_path / "net_cls,net_prio" / "c" / "net_cls.classid").read_text() == "1048577"
    assert (tmp_path / "net_cls,net_prio" / "c" / "net_prio.ifpriomap").read_text() == "eth0 500"
    assert warnings == ["cgroup controller hugetlb is not mounted; its limits are ignored"]
