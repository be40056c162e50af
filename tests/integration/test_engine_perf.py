"""Engine speed paths that must stay correct: the long-lived runtime create worker
(tugboat.engine.rtworker) is reused across containers, survives a failed create, and ends with
the daemon; `run --rm` answers with the exit code after the record is gone."""

from __future__ import annotations

import os
import time

import pytest

from engine_support import Daemon, bootstrap_busybox, cleanup_root


def _workers(pid: int) -> list[int]:
    """The daemon's child processes that are create workers."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    if b"tugboat.engine.rtworker" in f.read():
                        out.append(k)
            except OSError:
                continue
    return out


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def test_create_worker_reused_and_ends_with_daemon(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tmp_path_factory.mktemp("engine-perf")
    root = str(base / "root")
    os.makedirs(root)
    bootstrap_busybox(root)
    d = Daemon(root=root, sock=str(base / "tug.sock"), env={"TUG_ENGINE_NO_NETWORK": "1"})
    d.start()
    worker = 0
    try:
        assert d.proc is not None
        daemon_pid = d.proc.pid
        p = d.tug("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (p.returncode, p.stdout, p.stderr) == (3, b"out\n", b"err\n"), p.stderr
        workers = _workers(daemon_pid)
        assert len(workers) == 1, workers
        worker = workers[0]
        # a failed create (no such command) goes through the worker and leaves it serving
        p = d.tug("run", "--rm", "busybox", "/no/such/command")
        assert p.returncode == 127, p.stderr
        p = d.tug("run", "-d", "--name", "perf-d", "busybox", "sleep", "60")
        assert p.returncode == 0, p.stderr
        assert d.tug("stop", "-t", "0", "perf-d").returncode == 0
        assert d.tug("rm", "perf-d").returncode == 0
        for _ in range(3):
            p = d.tug("run", "--rm", "--name", "perf-rm", "busybox", "true")  # name free at once
            assert p.returncode == 0, p.stderr
        assert _workers(daemon_pid) == [worker]
        assert d.client().get("/containers/json", query={"all": "1"}) == []
        left = [n for n in os.listdir(os.path.join(root, "containers")) if not n.endswith(".removing")]
        assert left == []
    finally:
        d.stop()
        cleanup_root(root)
    end = time.time() + 10
    while worker and not _gone(worker) and time.time() < end:
        time.sleep(0.05)
    assert not worker or _gone(worker), "the create worker outlived the daemon"
