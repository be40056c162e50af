"""`events`: one stats object, a stream at an interval that ends when the container is deleted,
and an OOM notice when the kernel's OOM killer acts in the container's memory cgroup."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from runtime_cli_fixtures import cli_cmd
from runtime_fixtures import Bundles

from tugboat.errors import Conflict
from tugboat.runtime.api import Runtime
from tugboat.runtime.events import stream

pytest_plugins = ("runtime_fixtures",)


def test_events_stats_once(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("e1", bundles.make(["sleep", "100"]), detach=True)
    p = subprocess.run([*cli_cmd(runtime.root), "events", "--stats", "e1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('{"type":"stats","id":"e1","data":{')
    data = json.loads(lines[0])["data"]
    assert data["pids"]["current"] >= 1
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0


def test_events_stream_ends_on_delete(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("e2", bundles.make(["sleep", "100"]), detach=True)
    proc = subprocess.Popen([*cli_cmd(runtime.root), "events", "--interval", "100ms", "e2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        t0 = time.monotonic()
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert time.monotonic() - t0 < 5
        for line in (first, second):
            assert line.startswith('{"type":"stats","id":"e2","data":'), line
        runtime.delete("e2", force=True)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_refuses_a_stopped_container(runtime: Runtime, bundles: Bundles) -> None:
    runtime.run("e3", bundles.make(["true"]), detach=True)
    runtime.wait("e3", timeout=10)
    with pytest.raises(Conflict, match="not running"):
        stream(runtime, "e3", stats_only=True, emit=lambda line: None)


def test_events_oom(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["linux"]["resources"]["memory"] = {"limit": 33554432, "swap": 33554432}

    # dd's 64 MiB buffer cannot fit in 32 MiB (no swap): the OOM killer ends dd, sh goes on
    bundle = bundles.make(["sh", "-c", "sleep 0.5; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 100"],
                          edit=edit)
    runtime.run("e4", bundle, detach=True)
    lines: list[str] = []
    seen = threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if '"oom"' in line:
            seen.set()

    t = threading.Thread(target=stream, args=(runtime, "e4"), kwargs={"interval": 0.2, "emit": emit}, daemon=True)
    t.start()
    try:
        assert seen.wait(20), lines
        assert '{"type":"oom","id":"e4"}' in lines
    finally:
        runtime.delete("e4", force=True)
        t.join(10)
    assert not t.is_alive()  # the stream ends with the container's cgroup
