"""kubectl exec and port-forward through the API server to a node agent: WebSocket vs SPDY/3.1.

    .venv/bin/python bench/streams.py [--runs 20] [--mib 32]

Brings up an isolated 1-node cluster (`tug cluster up`), starts a busybox pod, then with the real
kubectl 1.32, once over WebSocket (its default) and once over plain SPDY/3.1
(``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``, ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``):

1. ``kubectl exec shell -- true``: wall time p50/p90 over ``--runs`` (kubectl start-up, TLS to the
   API server, API server → node agent TLS, upgrade, exec, exit status);
2. ``kubectl exec -i shell -- wc -c`` with ``--mib`` MiB on stdin: MiB/s;
3. ``kubectl exec shell -- head -c N /dev/zero``: MiB/s on stdout;
4. port-forward to busybox httpd in the pod, one ``--mib`` MiB download: MiB/s.

Peer reference: kubectl ↔ kube-apiserver ↔ kubelet is the same path (the kubelet serves SPDY
natively and WebSocket since 1.30; kube-apiserver splices SPDY upgrades as we do). No kubelet runs
on this VM, so the peer column is the same kubectl against our other transport.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from tugboat.cluster.up import cluster_down, cluster_up

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
                                        "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Kubectl:
    def __init__(self, kubeconfig: str, cache: str) -> None:
        self.kubeconfig, self.cache = kubeconfig, cache

    def env(self, transport: str) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=self.kubeconfig, **TRANSPORTS[transport])

    def run(self, *args: str, transport: str = "websocket", input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run(["kubectl", "--cache-dir", self.cache, *args], input=input, capture_output=True,
                           env=self.env(transport), timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.decode()[-2000:]}")
        return r

    def wait_running(self, pod: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("get", "pod", pod, "-o", "jsonpath={.status.phase}").stdout.decode()
            if out == "Running":
                return
            time.sleep(0.5)
        raise RuntimeError(f"pod {pod} not running")


def port_forward_mib_s(k: Kubectl, transport: str, size: int) -> float:
    proc = subprocess.Popen(["kubectl", "--cache-dir", k.cache, "port-forward", "pod/web", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=k.env(transport))
    try:
        assert proc.stdout is not None
        m = re.search(r"127\.0\.0\.1:(\d+) -> 8080", proc.stdout.readline())
        if not m:
            raise RuntimeError("port-forward did not start")
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/big", timeout=120) as r:
            n = len(r.read())
        dt = time.perf_counter() - t0
        if n != size:
            raise RuntimeError(f"port-forward got {n} bytes, wanted {size}")
        return size / dt / 2 ** 20
    finally:
        proc.kill()
        proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mib", type=int, default=32)
    o = ap.parse_args()
    if shutil.which("kubectl") is None:
        print("kubectl is not on PATH")
        return 1
    size = o.mib * 2 ** 20
    base = tempfile.mkdtemp(prefix="tug-bench-streams-")
    state_dir = os.path.join(base, "c")
    try:
        st = cluster_up(state_dir=state_dir, nodes=1, name="b" + uuid.uuid4().hex[:5], isolated=True,
                        subnet=f"172.27.{random.randint(1, 250)}.0/24", cluster_cidr="10.243.0.0/16")
        k = Kubectl(st["kubeconfig"], os.path.join(base, "kcache"))
        k.run("run", "shell", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
        k.run("run", "web", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sh", "-c",
              f"mkdir -p /w && head -c {size} /dev/zero > /w/big && exec httpd -f -p 8080 -h /w")
        k.wait_running("shell")
        k.wait_running("web")
        time.sleep(1)
        payload = os.urandom(size)
        rows = {}
        for transport in TRANSPORTS:
            k.run("exec", "shell", "--", "true", transport=transport)  # warm kubectl's discovery cache
            lat = []
            for _ in range(o.runs):
                t0 = time.perf_counter()
                k.run("exec", "shell", "--", "true", transport=transport)
                lat.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = k.run("exec", "-i", "shell", "--", "wc", "-c", transport=transport, input=payload)
            up = size / (time.perf_counter() - t0) / 2 ** 20
            assert int(r.stdout) == size, r.stdout
            t0 = time.perf_counter()
            r = k.run("exec", "shell", "--", "head", "-c", str(size), "/dev/zero", transport=transport)
            down = size / (time.perf_counter() - t0) / 2 ** 20
            assert len(r.stdout) == size
            pf = port_forward_mib_s(k, transport, size)
            rows[transport] = (pct(lat, 50), pct(lat, 90), up, down, pf)
        print(f"kubectl 1.32 -> API server -> node agent (1-node cluster), {o.runs} runs, {o.mib} MiB transfers")
        print(f"{'transport':<10} {'exec true p50':>14} {'p90':>8} {'stdin MiB/s':>12} {'stdout MiB/s':>13} "
              f"{'port-fwd MiB/s':>15}")
        for t, (p50, p90, up, down, pf) in rows.items():
            print(f"{t:<10} {p50 * 1000:>11.0f} ms {p90 * 1000:>5.0f} ms {up:>12.1f} {down:>13.1f} {pf:>15.1f}")
    finally:
        problems = cluster_down(state_dir=state_dir)
        if problems:
            print("cluster down problems:", problems)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
