"""Docker's secure defaults, proven from inside a container started by tug-runtime."""

from __future__ import annotations

import os

from runtime_fixtures import Bundles, run_capture

from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)


def test_host_pids_invisible(runtime: Runtime, bundles: Bundles) -> None:
    code, out = run_capture(runtime, bundles.make(["sh", "-c", "ls /proc | grep -E '^[0-9]+$' | wc -l; echo pid=$$"]))
    assert code == 0, out
    lines = out.split()
    assert "pid=1" in lines, out
    assert int(lines[0]) <= 5, out  # sh, ls, grep, wc: never the host's hundreds


def test_mount_and_umount_fail(runtime: Runtime, bundles: Bundles) -> None:
    _, out = run_capture(runtime, bundles.make(["sh", "-c", "probe mount; umount /proc; echo umount=$?"]))
    assert "mount: errno=1" in out, out  # EPERM
    assert "umount=1" in out or "umount=0" not in out, out


def test_no_cap_sys_admin(runtime: Runtime, bundles: Bundles) -> None:
    code, out = run_capture(runtime, bundles.make(["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status"]))
    assert code == 0, out
    for line in out.strip().splitlines():
        mask = int(line.split()[1], 16)
        assert not mask & (1 << 21), line  # CAP_SYS_ADMIN
        assert mask & (1 << 0), line  # CAP_CHOWN, a Docker default


def test_proc_kcore_and_sys_not_writable(runtime: Runtime, bundles: Bundles) -> None:
    _code, out = run_capture(
        runtime,
        bundles.make(["sh", "-c", "probe write /proc/sys/kernel/hostname; probe write /proc/sys/vm/drop_caches; "
                      "probe write /proc/kcore; if [ -e /proc/kcore ]; then echo kcore_size=$(wc -c < /proc/kcore); "
                      "else echo kcore_size=absent; fi; echo keys=$(wc -c < /proc/keys)"]),
    )
    assert "/proc/sys/kernel/hostname: errno=30" in out, out  # EROFS
    assert "/proc/sys/vm/drop_caches: errno=30" in out, out
    assert "/proc/kcore: ok" not in out, out
    kcore = out.split("kcore_size=")[1].split()[0]
    assert kcore in ("0", "absent"), out  # masked by /dev/null where the kernel has it
    assert "keys=0" in out, out  # /proc/keys masked


def test_seccomp_blocks_dangerous_syscalls(runtime: Runtime, bundles: Bundles) -> None:
    _code, out = run_capture(
        runtime, bundles.make(["sh", "-c", "probe keyctl; probe kexec_load; probe open_by_handle_at; probe unshare"])
    )
    for name in ("keyctl", "kexec_load", "open_by_handle_at", "unshare"):
        assert f"{name}: errno=1 " in out, out


def test_setuid_binary_gains_nothing_with_no_new_privileges(runtime: Runtime, bundles: Bundles) -> None:
    def edit(config: dict) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["noNewPrivileges"] = True

    bundle = bundles.make(["sh", "-c", "probe euid; /suidprobe euid"], edit=edit, copy_rootfs=True)
    suid = os.path.join(bundle, "rootfs", "suidprobe")
    with open(os.path.join(bundle, "rootfs", "bin", "probe"), "rb") as src, open(suid, "wb") as dst:
        dst.write(src.read())
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    code, out = run_capture(runtime, bundle)
    assert code == 0, out
    assert out.splitlines() == ["uid=1000 euid=1000", "uid=1000 euid=1000"], out


def test_setuid_binary_works_without_no_new_privileges(runtime: Runtime, bundles: Bundles) -> None:
    """The control for the test above: the same binary does gain euid 0 when allowed."""

    def edit(config: dict) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["noNewPrivileges"] = False

    bundle = bundles.make(["/suidprobe", "euid"], edit=edit, copy_rootfs=True)
    suid = os.path.join(bundle, "rootfs", "suidprobe")
    with open(os.path.join(bundle, "rootfs", "bin", "probe"), "rb") as src, open(suid, "wb") as dst:
        dst.write(src.read())
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    _code, out = run_capture(runtime, bundle)
    assert out.strip() == "uid=1000 euid=0", out


def test_memory_limit_oom_kills(runtime: Runtime, bundles: Bundles) -> None:
    def edit(config: dict) -> None:
        config["linux"]["resources"]["memory"] = {"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024}

    code, out = run_capture(runtime, bundles.make(["probe", "alloc", "200"], edit=edit))
    assert code == 137, (code, out)  # SIGKILL from the OOM killer
    assert "allocated" not in out


def test_pids_limit_stops_fork_bomb(runtime: Runtime, bundles: Bundles) -> None:
    def edit(config: dict) -> None:
        config["linux"]["resources"]["pids"] = {"limit": 20}

    _code, out = run_capture(runtime, bundles.make(["probe", "forkbomb", "1000"], edit=edit))
    assert "fork failed after" in out, out
    assert int(out.split("after ")[1].split(":")[0]) < 20, out
    assert "errno=11" in out, out  # EAGAIN
