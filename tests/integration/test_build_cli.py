# ruff: noqa: F811
"""`tug build` as a user runs it: progress, exit codes, -q/--iidfile, and a build killed half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from build_fixtures import BuildEnv, busybox_root, env  # noqa: F401

TUG = [sys.executable, "-m", "tugboat.cli.main"]


def tug(root: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*TUG, "--root", root, *args], capture_output=True, text=True, timeout=120, **kw)


def test_tug_build_plain_progress_tags_and_iidfile(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN echo hello-from-run\nCOPY a.txt /a.txt\n", {"a.txt": "a"})
    iid = tmp_path / "iid"
    r = tug(env.root, "build", "-t", "bt-cli:v1", "-t", "bt-cli:v2", "--iidfile", str(iid), ctx)
    assert r.returncode == 0, r.stderr
    assert "#1 [1/3] FROM busybox" in r.stderr
    assert "#2 [2/3] RUN echo hello-from-run" in r.stderr
    assert "hello-from-run" in r.stderr
    assert "naming to docker.io/library/bt-cli:v1 done" in r.stderr
    image_id = iid.read_text()
    assert env.images.resolve("bt-cli:v2").id == image_id
    r = tug(env.root, "build", "-q", ctx)
    assert r.returncode == 0
    assert r.stdout.strip() == image_id
    r = tug(env.root, "build", ctx)
    assert "#2 CACHED" in r.stderr and "#3 CACHED" in r.stderr


def test_tug_build_failure_exit_code_and_message(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN echo before-failing; exit 7\n")
    r = tug(env.root, "build", "-t", "bt-cli-fail", ctx)
    assert r.returncode == 7
    assert "before-failing" in r.stderr
    assert "ERROR: failed to solve: The command '/bin/sh -c echo before-failing; exit 7' returned a non-zero code: 7" in r.stderr
    assert not env.images.exists("bt-cli-fail")
    bad = env.context(tmp_path / "bad", "FROM busybox\nFORM x\n")
    r = tug(env.root, "build", bad)
    assert r.returncode == 1
    assert "Dockerfile:2: unknown instruction: FORM" in r.stderr


def test_tug_build_args_labels_target_and_file(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox AS first\nARG V\nRUN echo v=$V > /v\nFROM first\nRUN false\n")
    os.rename(os.path.join(ctx, "Dockerfile"), os.path.join(ctx, "Other.dockerfile"))
    r = tug(env.root, "build", "-f", os.path.join(ctx, "Other.dockerfile"), "--target", "first",
            "--build-arg", "V=42", "--label", "k=v", "-t", "bt-cli-target", ctx)
    assert r.returncode == 0, r.stderr
    img = env.images.resolve("bt-cli-target")
    assert env.read(img, "/v") == b"v=42\n"
    assert img.config["config"]["Labels"]["k"] == "v"


def _wait_for(pred, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_killed_build_tags_nothing_and_leaves_a_consistent_store(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN echo started > /started; sleep 60\n")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        p = subprocess.Popen([*TUG, "--root", env.root, "build", "-t", "bt-killed", ctx],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert _wait_for(lambda: any(k.startswith("build-") for k in env.images.snapshots.list()))
            time.sleep(0.5)
            p.send_signal(sig)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode != 0
        assert not env.images.exists("bt-killed")
    # the next build cleans what the SIGKILLed one left (container, mount, snapshot)
    ok = env.context(tmp_path / "ok", "FROM busybox\nRUN true\n")
    env.build(ok)
    assert not [k for k in env.images.snapshots.list() if k.startswith("build-")]
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if os.path.join(env.root, "build") in line]
    rt_root = os.path.join(env.root, "build", "runtime")
    assert not os.path.isdir(rt_root) or os.listdir(rt_root) == []
    report = env.images.check()
    assert not report.get("problems"), report


def test_cached_tug_build_loads_no_image_store_code(env: BuildEnv, tmp_path) -> None:
    """A fully cached `tug build` is start-up time: it must not import msgspec, the image service
    or the snapshotter (see tugboat.build.lazyimages)."""
    ctx = env.context(tmp_path, "FROM busybox\nRUN echo lazy > /lazy\nCOPY a.txt /a.txt\n", {"a.txt": "a"})
    first = tug(env.root, "build", "-q", "-t", "bt-lazy", ctx)
    assert first.returncode == 0, first.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", *TUG[1:], "--root", env.root, "build", "-q",
                        "-t", "bt-lazy", ctx], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == first.stdout.strip()
    loaded = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "tugboat.build.builder" in loaded
    assert not loaded & {"msgspec", "tugboat.images.service", "tugboat.snapshots.overlay", "argparse"}, loaded
    # a new tag on the same image: the image store is loaded (and written) only then
    r = tug(env.root, "build", "-q", "-t", "bt-lazy:other", ctx)
    assert r.returncode == 0 and r.stdout.strip() == first.stdout.strip()
    assert env.images.resolve("bt-lazy:other").id == first.stdout.strip()


def test_tug_build_network_flag(env: BuildEnv, tmp_path) -> None:
    ctx = env.context(tmp_path, "FROM busybox\nRUN ip -o link | grep -c eth0 || echo no-eth0\n")
    r = tug(env.root, "build", "--no-cache", "--network", "none", ctx)
    assert r.returncode == 0, r.stderr
    assert "no-eth0" in r.stderr
    r = tug(env.root, "build", "--no-cache", "--network=container:x", ctx)
    assert r.returncode == 1 and "not supported for builds" in r.stderr
