"""cgroup v2 device rules: our eBPF device program, loaded and attached by the real kernel.

This machine's cgroup2 (hybrid: /sys/fs/cgroup/unified) has no controllers, but device programs
attach to any cgroup2 directory and the kernel consults them before the v1 devices cgroup, so
the V2Manager path is tested here for real."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tugboat.runtime.cgroups import detect
from tugboat.runtime.cgroups.devices_bpf import compile_rules, rules_with_defaults
from tugboat.runtime.cgroups.v2 import V2Manager


@pytest.fixture
def cgroup2_dir():
    mount = detect().unified
    if not mount:
        pytest.skip("no cgroup2 mount")
    path = f"/tug-test-dev-{uuid.uuid4().hex[:8]}"
    d = os.path.join(mount, path.lstrip("/"))
    os.mkdir(d)
    try:
        yield mount, path, d
    finally:
        try:
            os.rmdir(d)
        except OSError:
            pass


def _try_in(d: str, script: str) -> str:
    """Run ``sh -c script`` after moving the shell into the cgroup ``d``."""
    p = subprocess.run(["sh", "-c", f"echo $$ > {d}/cgroup.procs; {script}"], capture_output=True, text=True,
                       timeout=10)
    return p.stdout


def test_compile_shape() -> None:
    exit_with = {v: bytes.fromhex(f"b7000000{v:02x}000000") + bytes.fromhex("9500000000000000") for v in (0, 1)}
    prog = compile_rules(rules_with_defaults([{"allow": False, "access": "rwm"}]))
    assert len(prog) % 8 == 0
    assert prog[-16:] == exit_with[0]  # the deny-all, checked last, ends the program
    assert compile_rules([{"allow": False, "type": "c", "major": 1, "minor": 11, "access": "r"}])[-16:] == exit_with[1]


def test_device_program_denies_and_allows(cgroup2_dir) -> None:
    mount, path, d = cgroup2_dir
    mgr = V2Manager(mount, path)
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"},    # /dev/full: read only
             {"allow": False, "type": "c", "major": 1, "minor": 8, "access": "rwa"}]  # "a" dropped, deny after deny-all
    assert mgr.apply({"devices": rules}) == []
    out = _try_in(d, "head -c1 /dev/zero >/dev/null && echo zero-ok; "
                     "head -c1 /dev/kmsg >/dev/null 2>&1 || echo kmsg-denied; "
                     "head -c1 /dev/full >/dev/null && echo full-read-ok; "
                     "(echo x > /dev/full) 2>/dev/null; [ $? -ne 0 ] && echo full-write-denied; "
                     "head -c1 /dev/urandom > /dev/null && echo urandom-ok")
    assert "zero-ok" in out  # 1:5 is one of the devices every container gets
    assert "kmsg-denied" in out  # 1:11: nothing allows it
    assert "full-read-ok" in out and "full-write-denied" in out
    assert "urandom-ok" in out


def test_an_allow_all_config_allows(cgroup2_dir) -> None:
    mount, path, d = cgroup2_dir
    V2Manager(mount, path).apply({"devices": [{"allow": True, "access": "rwm"}]})
    out = _try_in(d, "head -c1 /dev/kmsg >/dev/null 2>&1; echo rc=$?")
    # allowed by the cgroup: an error, if any, is not EPERM from the device program
    p = subprocess.run(["sh", "-c", f"echo $$ > {d}/cgroup.procs; head -c1 /dev/kmsg 2>&1 >/dev/null"],
                       capture_output=True, text=True, timeout=10)
    assert "Operation not permitted" not in p.stdout + p.stderr, out
