"""Benchmark `tug build`: a 3-line Dockerfile cold (--no-cache) and cached, and a 20-step cached rebuild.

The 3-line Dockerfile is the one of peer-baselines.md: ``FROM busybox``, ``RUN echo hi > /x``,
``COPY small.txt /small.txt`` (a 1.4 kB file); each run is a whole ``tug build`` process (what a
user waits for): the ``tug`` launcher next to the interpreter (``make venv`` writes it; ``python
-S``), else ``python -m tugboat.cli.main``. When ``dockerd`` or ``podman`` are installed and running, they are measured in
the same run (``docker build`` with DOCKER_BUILDKIT=0 against DOCKER_HOST, ``podman build``).

Reference medians on this machine (peer-baselines.md): docker legacy builder 1.06 s cold / 0.13 s
cached, BuildKit 0.51 / 0.15, podman 1.19 / 0.37. Goal: tugboat <= 0.3 s cold, <= 0.08 s cached.

Run: ``.venv/bin/python bench/build.py [--runs 10] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

THREE = "FROM busybox\nRUN echo hi > /x\nCOPY small.txt /small.txt\n"
TWENTY = "FROM busybox\n" + "".join(
    (f"RUN echo step{i} > /s{i}\n" if i % 4 == 0 else f"ENV V{i}=value{i}\n" if i % 4 == 1
     else f"COPY small.txt /c{i}.txt\n" if i % 4 == 2 else f"LABEL l{i}=v{i}\n")
    for i in range(19)
)


LAST_CPU: list[float] = []
LOAD0 = ""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one command; its CPU time (user+sys, children included) goes to CPU[id(result)]."""
    import resource

    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr.decode(errors='replace')[-2000:]}")
    return dt


def summary(name: str, xs: list[float]) -> str:
    cpu = LAST_CPU[-len(xs):]
    return (f"{name:<40} median {statistics.median(xs):6.3f} s  (min {min(xs):.3f}, max {max(xs):.3f}, "
            f"n={len(xs)}), cpu {statistics.median(cpu):.3f} s")


def _daemon_path(base: str, root: str, tug_cmd: list[str], ctx: str, runs: int) -> str:
    """``tug -H unix://… build`` (the context sent as a tar to the daemon's POST /build), cached."""
    sock = os.path.join(base, "tug.sock")
    env = dict(os.environ, TUG_ENGINE_NO_NETWORK="1")
    with open(os.path.join(base, "daemon.log"), "ab") as log:
        d = subprocess.Popen([*tug_cmd, "--root", root, "daemon", "--host", f"unix://{sock}"], stdout=log,
                             stderr=log, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline and d.poll() is None:
            time.sleep(0.05)
        cmd = [*tug_cmd, "-H", f"unix://{sock}", "build", "-q", "-t", "bench3", ctx]
        for _ in range(50):  # until the daemon answers
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        return summary("tug -H build (daemon), 3 lines, cached", [timed(cmd) for _ in range(runs)])
    finally:
        d.terminate()
        try:
            d.wait(timeout=20)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep", default=None, help="data root to reuse (default: a temporary one)")
    o = ap.parse_args()
    global LOAD0
    LOAD0 = f"{os.getloadavg()[0]:.2f}"
    if os.geteuid() != 0:
        print("bench/build.py needs root (RUN steps use mounts and namespaces); skipped")
        return 0
    base = o.keep or tempfile.mkdtemp(prefix="tug-build-bench-")
    root = os.path.join(base, "root")
    ctx3 = os.path.join(base, "ctx3")
    ctx20 = os.path.join(base, "ctx20")
    for d, text in ((ctx3, THREE), (ctx20, TWENTY)):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "Dockerfile"), "w") as f:
            f.write(text)
        with open(os.path.join(d, "small.txt"), "w") as f:
            f.write("x" * 1400)
    import compileall

    from tugboat.images.bootstrap import bootstrap_busybox
    from tugboat.images.service import ImageService

    compileall.compile_dir(str(REPO / "src" / "tugboat"), quiet=1)  # what a pip install does
    svc = ImageService(root)
    if not svc.exists("busybox:latest"):
        bootstrap_busybox(svc)
    launcher = os.path.join(os.path.dirname(sys.executable), "tug")
    with open(launcher if os.path.exists(launcher) else os.devnull, "rb") as f:
        first = f.readline()
    lean = first.startswith(b"#!") and first.rstrip().endswith(b" -S")
    tug_cmd = [launcher] if lean else [sys.executable, "-m", "tugboat.cli.main"]
    print(f"tug command: {' '.join(tug_cmd)}")
    tug = [*tug_cmd, "--root", root, "build", "-q"]
    results: list[str] = []
    try:
        timed([*tug, "-t", "bench3", ctx3])  # warm the page cache and the layer unpack
        results.append(summary("tug build, 3 lines, cold (--no-cache)",
                               [timed([*tug, "--no-cache", "-t", "bench3", ctx3]) for _ in range(o.runs)]))
        results.append(summary("tug build, 3 lines, cached", [timed([*tug, "-t", "bench3", ctx3])
                                                              for _ in range(2 * o.runs)]))
        timed([*tug, "-t", "bench20", ctx20])
        results.append(summary("tug build, 20 steps, cached", [timed([*tug, "-t", "bench20", ctx20])
                                                               for _ in range(o.runs)]))
        results.append(_daemon_path(base, root, tug_cmd, ctx3, o.runs))
        docker = shutil.which("docker")
        if docker and os.environ.get("DOCKER_HOST") and shutil.which("dockerd"):
            env = dict(os.environ, DOCKER_BUILDKIT="0")
            dk = [docker, "build", "-q", "-t", "bench3"]
            timed([*dk, ctx3], env)
            results.append(summary("docker build (legacy), cold", [timed([*dk, "--no-cache", ctx3], env)
                                                                   for _ in range(o.runs)]))
            results.append(summary("docker build (legacy), cached", [timed([*dk, ctx3], env)
                                                                     for _ in range(o.runs)]))
        podman = shutil.which("podman")
        if podman:
            pb = [podman, "build", "-q", "-t", "bench3"]
            timed([*pb, ctx3])
            results.append(summary("podman build, cold", [timed([*pb, "--no-cache", ctx3]) for _ in range(o.runs)]))
            results.append(summary("podman build, cached", [timed([*pb, ctx3]) for _ in range(o.runs)]))
    finally:
        if not o.keep:
            subprocess.run([sys.executable, "-m", "tugboat.cli.main", "--root", root, "builder", "prune"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            shutil.rmtree(base, ignore_errors=True)
    print(f"load average before/after: {LOAD0} / {os.getloadavg()[0]:.2f} (2 cores: figures above ~2 are inflated)")
    print("\n".join(results))
    print("goal: cold <= 0.300 s, cached <= 0.080 s (reference: docker legacy 1.06/0.13, BuildKit 0.51/0.15, "
          "podman 1.19/0.37)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
