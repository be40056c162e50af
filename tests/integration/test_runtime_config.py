"""config.json features, checked from inside the container."""

from __future__ import annotations

import os

from runtime_fixtures import Bundles, run_capture

from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)


def test_mounts_devices_sysctl_user(runtime: Runtime, bundles: Bundles, tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from host\n")

    def edit(c: dict) -> None:
        c["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700", "noexec"]},
        ]
        c["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}]
        c["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [7, 8], "umask": 0o077}
        c["domainname"] = "example.test"

    script = ("cat /data/hello.txt; touch /data/x 2>/dev/null || echo data-ro; "
              "grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4; "
              "stat -c '%F %a %t,%T' /dev/mynull; echo dev > /dev/mynull && echo dev-ok; "
              "cat /proc/sys/net/ipv4/ip_forward; cat /proc/self/status | grep ^Groups; umask; "
              "hostname; domainname 2>/dev/null || cat /proc/sys/kernel/domainname")
    code, out = run_capture(runtime, bundles.make(["sh", "-c", script], edit=edit))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "from host" and lines[1] == "data-ro", out
    assert lines[2].startswith("tmpfs rw,nosuid") or "noexec" in lines[2], out
    assert "size=1024k" in lines[2] and "mode=700" in lines[2], out
    assert lines[3] == "character special file 600 1,3" and lines[4] == "dev-ok", out
    assert lines[5] == "1", out
    assert lines[6].split()[1:] == ["7", "8"], out
    assert lines[7] == "0077", out
    assert lines[8] == "tugtest" and lines[9] == "example.test", out
    assert not (shared / "x").exists()


def test_readonly_root_and_devices_cgroup(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["root"]["readonly"] = True
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]})

    _, out = run_capture(runtime, bundles.make(["sh", "-c", "touch /x || echo root-ro; touch /tmp/y && echo tmp-rw; "
                                                    "mknod /tmp/kmsg c 1 11 || echo mknod-denied"], edit=edit))
    assert "root-ro" in out and "tmp-rw" in out, out
    assert "mknod-denied" in out, out  # CAP_MKNOD is there, the devices cgroup says no to 1:11


def test_cgroup_and_time_namespaces(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["linux"]["namespaces"] += [{"type": "cgroup"}, {"type": "time"}]
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}

    code, out = run_capture(runtime, bundles.make(["sh", "-c", "cat /proc/self/cgroup | grep memory; cut -d. -f1 /proc/uptime"],
                                                  edit=edit))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith(":memory:/"), out  # the container's cgroup is its root
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert int(lines[1]) >= host_uptime + 86400 * 365 - 5, out
    assert os.path.exists("/proc/self/ns/time")
