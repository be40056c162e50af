"""`make demo`: the main job, end to end, on a fresh machine.

Images part: bootstrap a busybox image from Debian's busybox-static (no image hub needed), list
it, save it to a docker-archive, load it back into a second, empty data root, check both stores,
and run the loaded image's shell in an overlay snapshot. Every step prints the `tug` command it
runs and its output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

TUG = [sys.executable, "-m", "tugboat.cli.main"]


def step(title: str, root: str, *args: str) -> str:
    shown = " ".join(["tug", "--root", root, *args])
    print(f"\n$ {shown}    # {title}", flush=True)
    t = time.perf_counter()
    r = subprocess.run([*TUG, "--root", root, *args], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.stderr:
        sys.stdout.write(r.stderr)
    print(f"  ({time.perf_counter() - t:.2f} s, exit {r.returncode})", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"demo step failed: {shown}")
    return r.stdout


def run_in_snapshot(root: str, image: str) -> None:
    """Mount the image's layers with overlayfs and run its shell in a chroot (root only)."""
    if os.geteuid() != 0:
        print("\n(not root: skipping the overlay mount step)")
        return
    from tugboat.images.service import ImageService
    from tugboat.snapshots.mount import umount

    svc = ImageService(root)
    img = svc.resolve(image)
    spec = svc.snapshots.prepare("demo", img)
    mnt = os.path.join(root, "demo-mnt")
    print(f"\n# overlay snapshot of {image}: {len(spec.lowerdirs)} lower dir(s), upper {spec.upperdir}")
    spec.mount(mnt)
    try:
        out = subprocess.run(["chroot", mnt, "/bin/sh", "-c", "echo hello from $(busybox | head -1 | cut -d' ' -f1-2)"],
                             capture_output=True, text=True)
        print("$ chroot <snapshot> /bin/sh -c 'echo hello from ...'")
        sys.stdout.write(out.stdout or out.stderr)
    finally:
        umount(mnt)
        svc.snapshots.remove("demo")


def main() -> int:
    base = tempfile.mkdtemp(prefix="tugboat-demo-", dir="/var/tmp")
    first, second = os.path.join(base, "root-a"), os.path.join(base, "root-b")
    archive = os.path.join(base, "busybox.tar")
    print(f"tugboat demo: data roots under {base}")
    try:
        step("build busybox from Debian's busybox-static", first, "image", "bootstrap", "busybox")
        step("list images", first, "images")
        step("save to a docker-archive (docker save format, also an OCI layout)", first,
             "save", "-o", archive, "busybox")
        print(f"  archive: {os.path.getsize(archive)} bytes")
        step("load it into an empty data root", second, "load", "-i", archive)
        step("the loaded image", second, "images", "--digests")
        step("its history", second, "history", "busybox")
        step("store consistency", second, "system", "check")
        a = step("image ID in root A", first, "images", "-q", "--no-trunc").strip()
        b = step("image ID in root B", second, "images", "-q", "--no-trunc").strip()
        run_in_snapshot(second, "busybox")
        same = "the same" if a == b and a else "DIFFERENT"
        print(f"\nDone: bootstrapped busybox ({a[:19]}), listed it, saved it to {archive}, loaded it back; "
              f"the image ID is {same} in both roots.")
        return 0 if a == b else 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
