"""Benchmark: tar header parsing of the layer reader, and the memory a header bomb costs.

- parse: ``read_entries`` over an in-memory PAX tar of 60,000 small entries (every one with PAX
  records: fractional mtime, a third with non-ASCII names); median of 7 runs.
- bomb: a gzip layer (~0.5 MB) whose first header claims a 512 MiB PAX body; apply_layer must
  refuse it; prints the growth of max RSS (was ~0.5 GB before the S-8 limit).

    .venv/bin/python bench/layer_headers.py
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import statistics
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from tugboat.snapshots import layer


def parse_seconds(raw: bytes) -> float:
    def on(h: dict, s: layer._Stream) -> None:  # type: ignore[type-arg]
        s.read(layer._padded(h["size"]))

    t = time.perf_counter()
    layer.read_entries(layer._Stream(io.BytesIO(raw)), on)
    return time.perf_counter() - t


def main() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(60000):
            ti = tarfile.TarInfo(f"usr/lib/pkg{i // 200:03d}/" + ("ü" if i % 3 == 0 else "") + f"file{i:06d}")
            ti.size, ti.mtime = 100, 1.5e9 + 0.25
            tf.addfile(ti, io.BytesIO(b"x" * 100))
    raw = buf.getvalue()
    runs = [parse_seconds(raw) for _ in range(7)]
    print(f"parse 60,000 PAX entries: median {statistics.median(runs):.3f} s  runs "
          + " ".join(f"{r:.3f}" for r in runs))

    with tempfile.TemporaryDirectory() as d:
        blob = os.path.join(d, "bomb.gz")
        size = 512 << 20
        h = tarfile.TarInfo("h")
        hdr = bytearray(h.tobuf(tarfile.USTAR_FORMAT))
        hdr[124:136] = (b"%011o" % size) + b"\0"
        hdr[156:157] = b"x"
        hdr[148:156] = b" " * 8
        hdr[148:156] = (b"%06o" % sum(hdr)) + b"\0 "
        with gzip.open(blob, "wb", compresslevel=1) as f:
            f.write(bytes(hdr))
            for _ in range(size >> 20):
                f.write(b"\0" * (1 << 20))
            f.write(b"\0" * 1024)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            layer.apply_layer(blob, os.path.join(d, "o"))
            print("bomb: ACCEPTED (no limit?)")
        except layer.LayerError as exc:
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
            print(f"bomb ({os.path.getsize(blob) >> 10} KiB gzip, 512 MiB PAX header): refused, "
                  f"max RSS grew {grew} KiB: {exc}")


if __name__ == "__main__":
    main()
