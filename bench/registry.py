"""Registry benchmark: `tug registry serve` vs distribution (Debian's docker-registry), paired.

1. skopeo pushes a ~200 MB image (one 200 MiB layer of random bytes) into an emptied registry,
   then pulls it into a fresh oci: directory; ours and distribution alternate run by run.
2. The same for a small image (one ~1 MB layer).
3. Our client (RegistryClient) pulling the big image from distribution vs skopeo pulling it.
4. 100 concurrent small pulls with our client against our registry (and against distribution).

Usage: .venv/bin/python bench/registry.py [--runs N] [--small-runs N] [--size-mb N]
Prints medians (min-max) and ratios; exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from tugboat.content.store import ContentStore  # noqa: E402
from tugboat.distribution.client import RegistryClient  # noqa: E402
from tugboat.util.net import free_port  # noqa: E402


def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.03)
    raise RuntimeError("server did not listen")


class Server:
    def __init__(self, kind: str, work: str) -> None:
        self.kind = kind
        self.work = work
        self.port = free_port()
        self.data = os.path.join(work, f"{kind}-data")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.kind == "tug":
            cmd = [sys.executable, "-m", "tugboat.cli.main", "registry", "serve", "--addr",
                   f"127.0.0.1:{self.port}", "--root", self.data]
            env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
        else:
            cfg = os.path.join(self.work, "dreg.yml")
            with open(cfg, "w") as f:
                f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.data}\n"
                        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
            cmd = ["docker-registry", "serve", cfg]
            env = dict(os.environ)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def empty(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.start()

    def rss_kib(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0


def make_layout(path: str, size: int, seed: str) -> int:
    """An OCI layout with one uncompressed tar layer of ``size`` random bytes; returns total bytes."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(path, "blobs", "sha256", d), "wb") as f:
            f.write(data)
        return "sha256:" + d, len(data)

    payload = os.urandom(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo(f"data-{seed}")
        ti.size = len(payload)
        t.addfile(ti, io.BytesIO(payload))
    raw = buf.getvalue()
    del payload
    ld, ls = put(raw)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}}).encode()
    cd, cs = put(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld,
                                  "size": ls}]}).encode()
    md, ms = put(man)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                      "digest": md, "size": ms,
                                                      "annotations": {"org.opencontainers.image.ref.name": "t"}}]}, f)
    return ls + cs + ms


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    el = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    return el


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}) s, n={len(xs)}"


def skopeo_push(layout: str, srv: Server, repo: str) -> float:
    return timed(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:t",
                  f"docker://127.0.0.1:{srv.port}/{repo}:t"])


def skopeo_pull(srv: Server, repo: str, work: str) -> float:
    out = tempfile.mkdtemp(dir=work, prefix="pull-")
    try:
        return timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://127.0.0.1:{srv.port}/{repo}:t",
                      f"oci:{out}:t"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def client_pull(srv: Server, repo: str, work: str) -> float:
    out = tempfile.mkdtemp(dir=work, prefix="cpull-")
    try:
        t = time.perf_counter()
        RegistryClient().pull(ContentStore(out), f"127.0.0.1:{srv.port}/{repo}:t")
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def concurrent_pulls(srv: Server, repo: str, work: str, n: int) -> tuple[float, int]:
    client = RegistryClient()
    dirs = [tempfile.mkdtemp(dir=work, prefix="cc-") for _ in range(n)]
    t = time.perf_counter()
    res = await asyncio.gather(*[client.pull_async(ContentStore(d), f"127.0.0.1:{srv.port}/{repo}:t")
                                 for d in dirs], return_exceptions=True)
    el = time.perf_counter() - t
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    errors = [r for r in res if isinstance(r, BaseException)]
    for e in errors[:3]:
        print(f"    error: {type(e).__name__}: {e}")
    return el, len(errors)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small-runs", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=100)
    o = ap.parse_args()
    for exe in ("skopeo", "docker-registry"):
        if shutil.which(exe) is None:
            print(f"{exe} is not installed")
            return 1
    work = tempfile.mkdtemp(prefix="tug-bench-registry-")
    servers = {k: Server(k, work) for k in ("tug", "distribution")}
    failed = False
    try:
        big = os.path.join(work, "big")
        small = os.path.join(work, "small")
        big_bytes = make_layout(big, o.size_mb * 1024 * 1024, "big")
        make_layout(small, 1024 * 1024, "small")
        for s in servers.values():
            s.start()
        print(f"image: {big_bytes / 1e6:.1f} MB; servers: tug :{servers['tug'].port}, "
              f"distribution :{servers['distribution'].port}")
        push: dict[str, list[float]] = {k: [] for k in servers}
        pull: dict[str, list[float]] = {k: [] for k in servers}
        for _i in range(o.runs):
            for k, s in servers.items():  # paired: tug then distribution, every run
                s.empty()
                push[k].append(skopeo_push(big, s, "bench/big"))
                pull[k].append(skopeo_pull(s, "bench/big", work))
        print("\n== skopeo, big image (push into an emptied registry; pull into a fresh oci: dir)")
        for k in servers:
            print(f"  {k:13s} push {fmt(push[k])} = {big_bytes / 1e6 / statistics.median(push[k]):.1f} MB/s; "
                  f"pull {fmt(pull[k])} = {big_bytes / 1e6 / statistics.median(pull[k]):.1f} MB/s")
        pr = [d / t for t, d in zip(push["tug"], push["distribution"], strict=True)]
        lr = [d / t for t, d in zip(pull["tug"], pull["distribution"], strict=True)]
        print(f"  throughput tug/distribution, pair by pair: push {statistics.median(pr):.2f}x "
              f"({min(pr):.2f}-{max(pr):.2f}), pull {statistics.median(lr):.2f}x ({min(lr):.2f}-{max(lr):.2f})")
        again = {k: [skopeo_push(big, s, "bench/big") for _ in range(3)] for k, s in servers.items()}
        print("  push again, blobs present: " + "; ".join(f"{k} {fmt(v)}" for k, v in again.items()))

        sp: dict[str, list[float]] = {k: [] for k in servers}
        sl: dict[str, list[float]] = {k: [] for k in servers}
        for _i in range(o.small_runs):
            for k, s in servers.items():
                s.empty()
                sp[k].append(skopeo_push(small, s, "bench/small"))
                sl[k].append(skopeo_pull(s, "bench/small", work))
        print("\n== skopeo, small image (1 MiB layer)")
        for k in servers:
            print(f"  {k:13s} push {fmt(sp[k])}; pull {fmt(sl[k])}")
        for s in servers.values():
            skopeo_push(big, s, "bench/big")
            skopeo_push(small, s, "bench/small")

        d = servers["distribution"]
        ours, theirs = [], []
        for _i in range(o.runs):
            ours.append(client_pull(d, "bench/big", work))
            theirs.append(skopeo_pull(d, "bench/big", work))
        r = [t / c for c, t in zip(ours, theirs, strict=True)]
        print("\n== pulling the big image from distribution: our client vs skopeo (paired)")
        print(f"  our client {fmt(ours)} = {big_bytes / 1e6 / statistics.median(ours):.1f} MB/s")
        print(f"  skopeo     {fmt(theirs)} = {big_bytes / 1e6 / statistics.median(theirs):.1f} MB/s")
        print(f"  speed ours/skopeo pair by pair: {statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})")

        print(f"\n== {o.concurrent} concurrent small pulls with our client")
        for k, s in servers.items():
            el, errs = asyncio.run(concurrent_pulls(s, "bench/small", work, o.concurrent))
            failed |= errs > 0
            print(f"  {k:13s} {el:.2f} s total, {errs} errors")
        print("\n== server peak RSS: " + ", ".join(f"{k} {s.rss_kib() / 1024:.1f} MiB" for k, s in servers.items()))
    except Exception as e:
        print(f"FAILED: {e}")
        failed = True
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
