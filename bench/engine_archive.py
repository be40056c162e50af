"""The `docker cp`/`export` helper's cost: wall time of one helper process per mode (stat, get of a
small tree, put of a small tar) on a scratch rootfs, paired (alternating runs) with the helper of
another git revision (``--baseline REV``, default HEAD) to show what a change costs.

    sudo .venv/bin/python bench/engine_archive.py --runs 30 [--baseline HEAD]

Needs root (the helper chroots). Prints medians in milliseconds.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tugboat.engine import archive


def _baseline_helper(rev: str) -> str | None:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    r = subprocess.run(["git", "-C", root, "show", f"{rev}:src/tugboat/engine/archive.py"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return None
    ns: dict = {}
    exec(compile(r.stdout, "baseline-archive.py", "exec"), ns)
    return ns["_HELPER"]


def _once(helper: str, mode: str, root: str, path: str, stdin: bytes | None, env: dict | None) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-I", "-S", "-c", helper, mode, root, path, ""], input=stdin,
                       capture_output=True, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{mode}: helper failed: {p.stderr.decode(errors='replace')}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--baseline", default="HEAD")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    root = tempfile.mkdtemp(prefix="tug-bench-cp-")
    try:
        for d in range(20):
            os.makedirs(os.path.join(root, "data", f"d{d}"))
            for f in range(10):
                with open(os.path.join(root, "data", f"d{d}", f"f{f}"), "wb") as fh:
                    fh.write(os.urandom(4096))
        os.makedirs(os.path.join(root, "dest"))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(os.path.join(root, "data", "d0"), arcname="d0")
        put_tar = buf.getvalue()
        helpers = {"now": (archive._HELPER, archive._HELPER_ENV)}
        base = _baseline_helper(a.baseline)
        if base is not None and base != archive._HELPER:
            helpers[a.baseline] = (base, None)
        cases = [("stat", "/data", None), ("get", "/data", None), ("put", "/dest", put_tar)]
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.runs):
            for name, (helper, env) in helpers.items():
                for mode, path, stdin in cases:
                    times.setdefault((name, mode), []).append(_once(helper, mode, root, path, stdin, env))
        for mode, _p, _s in cases:
            line = "  ".join(f"{name} {statistics.median(times[(name, mode)]) * 1000:6.1f} ms" for name in helpers)
            print(f"helper {mode:5s} (median of {a.runs}): {line}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
