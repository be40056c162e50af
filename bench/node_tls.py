"""What the node endpoint's TLS costs.

    .venv/bin/python bench/node_tls.py [--csrs 10] [--requests 200]

1. Serving-certificate bootstrap: a node's CertificateSigningRequest from POST to signed
   certificate, against a real API server process and the real ``csrsigning`` controller
   (p50/max over ``--csrs`` requests, one at a time) — part of every node agent's first start.
2. A request to the node endpoint on a new connection each time (what the API server's node proxy
   does per ``kubectl logs/exec/port-forward``): HTTPS with client-certificate authentication vs
   plain HTTP (p50/p99 over ``--requests``), loopback, same process.

Peer reference: the kubelet's TLS bootstrap waits for kube-controller-manager's csrsigning (sync on
watch events, ~instant) plus an approver; kube-apiserver → kubelet is HTTPS with a client
certificate on every proxied stream, as here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import aiohttp

from tugboat.cluster.apiserver.certs import ClusterPKI
from tugboat.cluster.apiserver.nodeproxy import kubelet_client_ssl
from tugboat.cluster.apiserver.testing import ApiServerProcess
from tugboat.cluster.client.rest import ApiClient
from tugboat.cluster.controllers.base import Options
from tugboat.cluster.controllers.manager import ControllerManager
from tugboat.cluster.node import tls
from tugboat.cluster.node.server import start_server


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def csr_roundtrips(api: ApiServerProcess, n: int, work: Path) -> list[float]:
    pki = ClusterPKI(str(api.dir))
    opts = Options(cluster_signing_cert_file=pki.ca_cert, cluster_signing_key_file=pki.path("ca.key"))
    async with ApiClient.from_kubeconfig(api.kubeconfig) as c, ApiClient.from_kubeconfig(api.kubeconfig) as node:
        cm = ControllerManager(c, options=opts, controllers=["csrsigning"])
        task = asyncio.create_task(cm.run())
        await asyncio.sleep(1.0)  # informer synced
        out = []
        try:
            for i in range(n):
                t0 = time.perf_counter()
                await tls.bootstrap_serving_cert(node, f"bench-{i}", ["127.0.0.1"], str(work / f"n{i}"),
                                                 ca_pem=Path(pki.ca_cert).read_bytes(), timeout=30)
                out.append(time.perf_counter() - t0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return out


async def endpoint_requests(work: Path, n: int) -> tuple[list[float], list[float]]:
    pki = ClusterPKI(str(work / "cluster"))
    pki.ensure(["127.0.0.1"])
    key_pem, csr_pem = tls.make_serving_request("bench", ["127.0.0.1"])
    (work / "k.pem").write_bytes(key_pem)
    (work / "c.pem").write_bytes(tls.sign_serving_request(csr_pem, Path(pki.ca_cert).read_bytes(),
                                                          Path(pki.path("ca.key")).read_bytes()))
    secure: Any = SimpleNamespace(port=0, workers={}, name="bench",
                                  kubelet_ssl=tls.server_ssl_context(str(work / "c.pem"), str(work / "k.pem"),
                                                                     pki.ca_cert))
    plain: Any = SimpleNamespace(port=0, workers={}, name="bench", kubelet_ssl=None)
    r1 = await start_server(secure, "127.0.0.1", 0)
    r2 = await start_server(plain, "127.0.0.1", 0)
    ctx = kubelet_client_ssl(pki.data_dir)
    res: dict[str, list[float]] = {"https": [], "http": []}
    try:
        for _ in range(n):
            for scheme, port, ssl_ in (("https", secure.port, ctx), ("http", plain.port, False)):
                t0 = time.perf_counter()
                async with aiohttp.ClientSession() as s, s.get(f"{scheme}://127.0.0.1:{port}/healthz", ssl=ssl_) as r:
                    assert r.status == 200, r.status
                    await r.read()
                res[scheme].append(time.perf_counter() - t0)
    finally:
        await r1.cleanup()
        await r2.cleanup()
    return res["https"], res["http"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csrs", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200)
    o = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tug-bench-tls-") as d:
        work = Path(d)
        with ApiServerProcess(work / "as") as api:
            rt = asyncio.run(csr_roundtrips(api, o.csrs, work))
        print(f"node serving certificate via CSR (POST -> signed, {o.csrs} nodes): "
              f"p50 {statistics.median(rt) * 1000:.0f} ms, max {max(rt) * 1000:.0f} ms")
        https, http = asyncio.run(endpoint_requests(work, o.requests))
        print(f"node endpoint, new connection per request ({o.requests}): HTTPS+client cert "
              f"p50 {pct(https, 50) * 1000:.1f} ms p99 {pct(https, 99) * 1000:.1f} ms; plain HTTP "
              f"p50 {pct(http, 50) * 1000:.1f} ms p99 {pct(http, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
