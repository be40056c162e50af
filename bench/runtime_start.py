"""Benchmark: `tug-runtime run` of /bin/true in a busybox bundle, paired with runc (and crun).

Builds a busybox bundle in a temp dir (config from `runc spec`-like defaults via our
default_spec: namespaces pid, ipc, uts, mount, with and without network), then runs each
runtime N times in interleaved pairs and prints medians and per-pair ratios.

    .venv/bin/python bench/runtime_start.py [--runs 20]
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


def make_bundle(base: str, network: bool) -> str:
    bundle = os.path.join(base, "net" if network else "nonet")
    rootfs = os.path.join(bundle, "rootfs")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for a in ("sh", "true", "ls", "cat", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", a))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    spec = default_spec(["/bin/true"])
    spec["hostname"] = "bb"
    spec["process"]["noNewPrivileges"] = True
    if not network:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], key: str | None = None) -> float:
    """Wall time of one run (the CPU figures in CPU count only reaped children: not comparable
    between runtimes whose container processes are reaped by different parents)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read() if proc.stderr else b""
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.decode().strip()}")
    if key:
        CPU.setdefault(key, []).append(ru.ru_utime + ru.ru_stime)
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root")
        return 1
    base = tempfile.mkdtemp(prefix="tug-bench-")
    try:
        launcher = write_launcher(os.path.join(base, "tug-runtime"))
        venv_script = os.path.join(os.path.dirname(sys.executable), "tug-runtime")
        runtimes: dict[str, list[str]] = {"tug-runtime (lean launcher)": [launcher, "--root", f"{base}/tug"]}
        if os.path.exists(venv_script):
            runtimes["tug-runtime (pip console script)"] = [venv_script, "--root", f"{base}/tug2"]
        for name in ("runc", "crun"):
            path = shutil.which(name)
            if path:
                runtimes[name] = [path, "--root", f"{base}/{name}"]
        print(f"runtimes: {', '.join(runtimes)}; {args.runs} paired runs each; load {os.getloadavg()[0]:.2f}")
        for network in (True, False):
            bundle = make_bundle(base, network)
            times: dict[str, list[float]] = {k: [] for k in runtimes}
            for cmd in runtimes.values():  # warm-up (compiles tug-monitor, seccomp cache)
                timed([*cmd, "run", "--bundle", bundle, "warm"])
            for i in range(args.runs):
                for name, cmd in runtimes.items():
                    try:
                        times[name].append(timed([*cmd, "run", "--bundle", bundle, f"b{i}"], f"{name}/{network}"))
                    except SystemExit as e:
                        if name == "crun":  # crun refuses hybrid cgroups (peer-baselines gotcha 1)
                            print(f"  crun skipped: {e}")
                            del runtimes["crun"]
                            break
                        raise
            print(f"\n/bin/true, {'with' if network else 'without'} a network namespace")
            ref = times.get("runc")
            for name, xs in times.items():
                if not xs:
                    continue
                line = (f"  {name:34s} median {statistics.median(xs) * 1000:6.1f} ms "
                        f"(min {min(xs) * 1000:5.1f}, max {max(xs) * 1000:5.1f})")
                if ref and name != "runc":
                    ratios = [a / b for a, b in zip(xs, ref, strict=False)]
                    line += f"  ratio to runc: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
                print(line)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
