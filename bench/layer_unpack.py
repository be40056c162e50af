"""Benchmark: unpack a ~200 MB gzip layer of many files.

Compares, in the same run and on the same file: tugboat (Snapshotter.unpack_layer: decompress,
verify the diff ID, write every file with its metadata), `tar -xzf`, and `umoci unpack` of an OCI
image made of that layer. Runs alternate (tar, tugboat, umoci, …); medians are printed.

    .venv/bin/python bench/layer_unpack.py [--mb 200] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def make_layer(path: str, target_mb: int) -> tuple[int, int, str]:
    """A gzip layer of many files (mostly 4–64 KiB, some larger, in nested dirs); returns
    (files, uncompressed bytes, diff_id)."""
    rnd = random.Random(42)
    pool = os.urandom(8 << 20)
    text = (b"the quick brown fox jumps over the lazy dog 0123456789\n" * 20000)
    target = target_mb << 20
    raw = tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False)  # noqa: SIM115
    n = 0
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        while total < target:
            d = f"usr/lib/pkg{n // 200:03d}/sub{(n // 20) % 10}"
            for i in range(1, len(d.split("/")) + 1):
                dd = "/".join(d.split("/")[:i])
                if dd not in dirs:
                    dirs.add(dd)
                    ti = tarfile.TarInfo(dd)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    tf.addfile(ti)
            size = (rnd.choice([512, 1500, 4096, 6000, 8192, 12000, 16384, 32768]) if rnd.random() < 0.995
                    else rnd.randint(1, 4) << 20)
            src = pool if rnd.random() < 0.85 else text
            off = rnd.randint(0, len(src) - min(size, len(src)))
            data = src[off:off + size]
            ti = tarfile.TarInfo(f"{d}/file{n:06d}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
            n += 1
            total += len(data)
    raw.close()
    h = hashlib.sha256()
    with open(raw.name, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    with open(path, "wb") as out:
        subprocess.run(["gzip", "-6", "-n", "-c", raw.name], stdout=out, check=True)
    os.unlink(raw.name)
    return n, total, "sha256:" + h.hexdigest()


def make_oci_layout(layout: str, layer: str, diff_id: str) -> None:
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
            f.write(data)
        return "sha256:" + d, len(data)

    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    ldigest = "sha256:" + h.hexdigest()
    os.link(layer, os.path.join(layout, "blobs", "sha256", ldigest[7:]))
    cfg, cfg_size = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                                    "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    man, man_size = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldigest,
                    "size": os.path.getsize(layer)}]}).encode())
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man, "size": man_size,
            "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    o = ap.parse_args()
    from tugboat.content.store import ContentStore
    from tugboat.snapshots.overlay import Snapshotter

    work = o.keep or tempfile.mkdtemp(prefix="tug-bench-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        layer = os.path.join(work, "layer.tar.gz")
        t0 = time.time()
        nfiles, raw_size, diff_id = make_layer(layer, o.mb)
        size = os.path.getsize(layer)
        print(f"layer: {size / 1e6:.1f} MB gzip, {raw_size / 1e6:.1f} MB of content in {nfiles} files "
              f"(made in {time.time() - t0:.1f} s)")
        cs = ContentStore(os.path.join(work, "root", "content"))
        with open(layer, "rb") as f:
            blob = cs.ingest(f)
        snap = Snapshotter(os.path.join(work, "root", "snapshots"), cs)
        layout = os.path.join(work, "layout")
        have_umoci = shutil.which("umoci") is not None
        if have_umoci:
            make_oci_layout(layout, layer, diff_id)
        subprocess.run(["cat", layer], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        def run_tar() -> float:
            out = os.path.join(work, "tar-out")
            os.makedirs(out)
            t = time.perf_counter()
            subprocess.run(["tar", "-xzf", layer, "-C", out], check=True)
            dt = time.perf_counter() - t
            shutil.rmtree(out)
            return dt

        def run_tug() -> float:
            cid = diff_id
            t = time.perf_counter()
            snap.unpack_layer(cid, diff_id, blob, "application/vnd.oci.image.layer.v1.tar+gzip")
            dt = time.perf_counter() - t
            snap.remove_layer(cid)
            return dt

        def run_umoci() -> float:
            out = os.path.join(work, "umoci-out")
            t = time.perf_counter()
            subprocess.run(["umoci", "unpack", "--image", f"{layout}:big", out], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            dt = time.perf_counter() - t
            shutil.rmtree(out)
            return dt

        times: dict[str, list[float]] = {"tar -xzf": [], "tugboat": [], "umoci unpack": []}
        for _ in range(o.runs):
            times["tar -xzf"].append(run_tar())
            times["tugboat"].append(run_tug())
            if have_umoci:
                times["umoci unpack"].append(run_umoci())
        med = {k: statistics.median(v) for k, v in times.items() if v}
        print(f"{'what':<14} {'median s':>9} {'MB/s (gzip)':>12} {'MB/s (content)':>15}   runs")
        for k, v in med.items():
            print(f"{k:<14} {v:9.3f} {size / 1e6 / v:12.1f} {raw_size / 1e6 / v:15.1f}   "
                  + " ".join(f"{x:.2f}" for x in times[k]))
        ratio = med["tar -xzf"] / med["tugboat"]
        print(f"tugboat / tar speed ratio: {ratio:.2f} (goal >= 0.9)")
        if "umoci unpack" in med:
            print(f"tugboat / umoci speed ratio: {med['umoci unpack'] / med['tugboat']:.2f}")
    finally:
        if not o.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
