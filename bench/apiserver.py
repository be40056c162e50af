"""Benchmark the Kubernetes API server on SQLite and on etcd, side by side.

1. create N pods (default 10,000) from C concurrent clients (default 50): throughput, p50/p99 latency;
2. list all N pods (one request, JSON);
3. W concurrent watchers (default 1,000) on the pods of one namespace: the latency until every
   watcher has seen each of K changes (p50/p99 over all watcher×change pairs).

Goals (issue 8): on SQLite >= 1,000 creates/s and p99 <= 50 ms; watch p99 <= 100 ms.
Run: ``.venv/bin/python bench/apiserver.py [--pods 10000] [--clients 50] [--watchers 1000]
[--backends sqlite,etcd]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tugboat.cluster.apiserver.testing import ApiServerProcess, EtcdProcess


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def pod(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
                       "spec": {"containers": [{"name": "c", "image": "registry.local/bench:1.0",
                                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}).encode()


async def bench(api: ApiServerProcess, n: int, clients: int, watchers: int, changes: int) -> dict[str, float]:
    ssl = api.ssl_context()
    res: dict[str, float] = {}
    conn = aiohttp.TCPConnector(ssl=ssl, limit=clients)
    async with aiohttp.ClientSession(connector=conn) as s:
        url = api.url + "/api/v1/namespaces/default/pods"
        lat: list[float] = []
        counter = iter(range(n))
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t = time.perf_counter()
                async with s.post(url, data=pod(f"bench-{i:05d}"), headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 201:
                        errors += 1
                lat.append(time.perf_counter() - t)

        async def warm() -> None:  # open the clients' connections (TLS handshakes) before timing
            async with s.get(api.url + "/version") as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        dt = time.perf_counter() - t0
        res["creates/s"] = n / dt
        res["create p50 ms"] = pct(lat, 0.5) * 1000
        res["create p99 ms"] = pct(lat, 0.99) * 1000
        res["create errors"] = errors
        t = time.perf_counter()
        async with s.get(url) as r:
            body = await r.read()
        res["list s"] = time.perf_counter() - t
        res["list items"] = len(json.loads(body)["items"])
        res["list MB"] = len(body) / 1e6

    # watchers: each its own connection
    wconn = aiohttp.TCPConnector(ssl=ssl, limit=0)
    async with aiohttp.ClientSession(connector=wconn, timeout=aiohttp.ClientTimeout(total=None)) as s:
        ns = "default"
        cm_url = api.url + f"/api/v1/namespaces/{ns}/configmaps"
        async with s.get(cm_url) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        seen: dict[int, list[float]] = {i: [] for i in range(changes)}
        sent: dict[int, float] = {}
        ready = 0
        done = asyncio.Event()
        total = [0]

        async def watcher() -> None:
            nonlocal ready
            async with s.get(cm_url, params={"watch": "true", "resourceVersion": rv,
                                             "labelSelector": "bench=watch", "timeoutSeconds": "120"}) as r:
                ready += 1
                async for line in r.content:
                    now = time.perf_counter()
                    i = line.find(b'"data":{"k":"') + 13  # cheaper than parsing 1,000 copies of the event
                    k = int(line[i:line.index(b'"', i)])
                    seen[k].append(now - sent[k])
                    total[0] += 1
                    if total[0] >= watchers * changes:
                        done.set()
                    if k == changes - 1:
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
        while ready < watchers:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for k in range(changes):
            body = json.dumps({"metadata": {"name": f"watch-{k}", "labels": {"bench": "watch"}}, "data": {"k": str(k)}})
            sent[k] = time.perf_counter()
            async with s.post(cm_url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
            await asyncio.sleep(0.2)
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pass
        for t in tasks:
            t.cancel()
        all_lat = [x for v in seen.values() for x in v]
        res["watch events"] = len(all_lat)
        res["watch p50 ms"] = pct(all_lat, 0.5) * 1000
        res["watch p99 ms"] = pct(all_lat, 0.99) * 1000
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--backends", default="sqlite,etcd")
    o = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    for backend in o.backends.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"tug-bench-{backend}-"))
        etcd = None
        try:
            ds = None
            if backend == "etcd":
                if shutil.which("etcd") is None:
                    print("etcd not installed; skipping")
                    continue
                etcd = EtcdProcess(tmp / "etcd").start()
                ds = etcd.datastore
            with ApiServerProcess(tmp / "apiserver", ds) as api:
                try:
                    import uvloop

                    results[backend] = uvloop.run(bench(api, o.pods, o.clients, o.watchers, o.changes))
                except ImportError:
                    results[backend] = asyncio.run(bench(api, o.pods, o.clients, o.watchers, o.changes))
        finally:
            if etcd:
                etcd.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    keys = list(next(iter(results.values())).keys()) if results else []
    names = list(results)
    print(f"{'':18}" + "".join(f"{n:>14}" for n in names))
    for k in keys:
        print(f"{k:18}" + "".join(f"{results[n][k]:14.1f}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
