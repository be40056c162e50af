"""Benchmark: `update` and `events --stats` of a running container, tug-runtime paired with runc.

Starts one detached busybox `sleep` container per runtime (same bundle, cgroup v1 limits as
runc's update.bats sets), then times N interleaved pairs of `update --pids-limit K` (cgroup
writes plus the state record) and `events --stats` (every stats file read and printed as JSON),
and prints medians and the median of per-pair ratios; then the same two operations through the
Python API in-process (what the engine calls), for tug-runtime alone.

    .venv/bin/python bench/runtime_update.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from tugboat.runtime.launcher import write_launcher
from tugboat.runtime.spec import default_spec


def make_bundle(base: str, cgroup: str) -> str:
    bundle = os.path.join(base, "bundle-" + cgroup.strip("/").replace("/", "-"))
    rootfs = os.path.join(bundle, "rootfs")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "sleep"))
    spec = default_spec(["sleep", "1000"])
    spec["process"]["terminal"] = False
    spec["linux"]["cgroupsPath"] = cgroup
    spec["linux"]["resources"].update({"memory": {"limit": 33554432, "reservation": 25165824},
                                       "cpu": {"shares": 100, "quota": 500000, "period": 1000000},
                                       "pids": {"limit": 20}})
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode().strip()}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root")
        return 1
    runc = shutil.which("runc")
    base = tempfile.mkdtemp(prefix="tug-bench-update-")
    runtimes: dict[str, list[str]] = {
        "tug-runtime (lean launcher)": [write_launcher(os.path.join(base, "tug-runtime")), "--root", f"{base}/tug"]}
    if runc:
        runtimes["runc"] = [runc, "--root", f"{base}/runc"]
    started: list[list[str]] = []
    try:
        for i, cmd in enumerate(runtimes.values()):
            bundle = make_bundle(base, f"/tug-bench-update-{os.getpid()}-{i}")
            subprocess.run([*cmd, "run", "-d", "--bundle", bundle, "u"], check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append(cmd)
        print(f"runtimes: {', '.join(runtimes)}; {args.runs} paired runs each; load {os.getloadavg()[0]:.2f}")
        for label, verb in (("update --pids-limit K", "update"), ("events --stats", "events")):
            times: dict[str, list[float]] = {k: [] for k in runtimes}
            for i in range(args.runs):
                for name, cmd in runtimes.items():
                    argv = ([*cmd, "update", "--pids-limit", str(30 + i % 2), "u"] if verb == "update"
                            else [*cmd, "events", "--stats", "u"])
                    times[name].append(timed(argv))
            print(f"\n{label}")
            ref = times.get("runc")
            for name, xs in times.items():
                line = (f"  {name:30s} median {statistics.median(xs) * 1000:6.1f} ms "
                        f"(min {min(xs) * 1000:5.1f}, max {max(xs) * 1000:5.1f})")
                if ref and name != "runc":
                    ratios = [a / b for a, b in zip(xs, ref, strict=False)]
                    line += f"  ratio to runc: median {statistics.median(ratios):.2f}"
                print(line)
        # the engine's path: the Python API in-process (no interpreter start-up per call)
        from tugboat.runtime.api import Runtime
        from tugboat.runtime.events import container_stats

        rt = Runtime(f"{base}/tug", cgroup_parent=None)
        api: dict[str, list[float]] = {"Runtime.update()": [], "events.container_stats()": []}
        for i in range(args.runs):
            t = time.perf_counter()
            rt.update("u", {"pids": {"limit": 30 + i % 2}})
            api["Runtime.update()"].append(time.perf_counter() - t)
            t = time.perf_counter()
            container_stats(rt._manager(rt._sd("u").load()))
            api["events.container_stats()"].append(time.perf_counter() - t)
        print("\nin-process Python API (tug-runtime only)")
        for name, xs in api.items():
            print(f"  {name:30s} median {statistics.median(xs) * 1000:6.2f} ms")
    finally:
        for cmd in started:
            subprocess.run([*cmd, "delete", "-f", "u"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
