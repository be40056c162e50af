"""`tug daemon start|status|stop` and the socket's mode; `--volumes-from` through the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import engine_support
from engine_support import Daemon, cleanup_root

daemon = engine_support.daemon
TUG = [sys.executable, "-m", "tugboat.cli.main"]


def test_daemon_start_status_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = str(tmp_path / "root")
    host = f"unix://{tmp_path}/d.sock"
    env = dict(os.environ, TUG_ENGINE_NO_NETWORK="1")
    try:
        p = subprocess.run([*TUG, "daemon", "start", "--root", root, "--host", host], capture_output=True,
                           text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "started" in p.stdout
        mode = stat.S_IMODE(os.stat(f"{tmp_path}/d.sock").st_mode)
        assert mode == 0o660
        p = subprocess.run([*TUG, "daemon", "status", "--root", root, "--host", host], capture_output=True, text=True)
        assert p.returncode == 0 and "is running" in p.stdout
        p = subprocess.run([*TUG, "--host", host, "version"], capture_output=True, text=True)
        assert p.returncode == 0 and "API version:       1.50" in p.stdout
    finally:
        p = subprocess.run([*TUG, "daemon", "stop", "--root", root, "--host", host], capture_output=True,
                           text=True, timeout=60)
        cleanup_root(root)
    assert p.returncode == 0 and "stopped" in p.stdout
    p = subprocess.run([*TUG, "daemon", "status", "--root", root, "--host", host], capture_output=True, text=True)
    assert p.returncode == 3 and "not running" in p.stdout
    assert not os.path.exists(f"{tmp_path}/d.sock")


def test_volumes_from_and_mount_flag(daemon: Daemon) -> None:
    p = daemon.tug("run", "-d", "--name", "src1", "--mount", "type=volume,source=shared1,target=/shared",
                   "busybox", "sh", "-c", "echo from-src > /shared/f; sleep 30")
    assert p.returncode == 0, p.stderr
    import time

    time.sleep(0.5)
    p = daemon.tug("run", "--rm", "--volumes-from", "src1:ro", "busybox", "sh", "-c",
                   "cat /shared/f; touch /shared/x 2>/dev/null || echo read-only")
    assert p.stdout == b"from-src\nread-only\n", p.stderr
    p = daemon.tug("run", "--rm", "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m", "busybox",
                   "sh", "-c", "grep /scratch /proc/mounts")
    assert b"tmpfs /scratch" in p.stdout
    p = daemon.tug("run", "--rm", "--mount", "type=bind,source=/nonexistent-dir-xyz,target=/x", "busybox", "true")
    assert p.returncode == 125 and b"bind source path does not exist" in p.stderr
    assert daemon.tug("rm", "-f", "-v", "src1").returncode == 0
    assert daemon.tug("volume", "rm", "shared1").returncode == 0
