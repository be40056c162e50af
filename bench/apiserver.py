"""Benchmark the Kubernetes API server on SQLite and on etcd, side by side.

1. create N pods (default 10,000) from C concurrent clients (default 50): throughput, p50/p99 latency;
2. list all N pods (one request, JSON);
3. W concurrent watchers (default 1,000) on the configmaps of one namespace: the latency until each
   watcher has seen each of K changes (p50/p99 over all watcher×change pairs), measured from just
   before the change's POST is sent to the moment the watcher's connection receives the event.

Goals (issue 8): on SQLite >= 1,000 creates/s and p99 <= 50 ms; watch p99 <= 100 ms.

The load generator runs on the same machine (2 cores here) as the server, so it competes with it for
the CPUs. It is therefore lean on purpose: plain asyncio protocols on uvloop speaking HTTP/1.1 over
TLS (keep-alive, client certificate), answers framed by Content-Length, watch streams scanned for
the change marker without parsing JSON. An aiohttp client costs about as much CPU per request as
the server (≈ 0.35 ms), and with 1,000 watch streams its per-stream task wake-ups made the
*client* the bottleneck of the watch figure (`--client aiohttp` measures with it, for comparison).
Each run also prints the server's CPU seconds, so per-request costs can be compared when the
machine is busy with other work (then the wall-clock figures move a lot).

Run: ``.venv/bin/python bench/apiserver.py [--pods 10000] [--clients 50] [--watchers 1000]
[--changes 10] [--backends sqlite,etcd] [--client lean|aiohttp] [--runs 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tugboat.cluster.apiserver.testing import ApiServerProcess, EtcdProcess


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def pod(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
                       "spec": {"containers": [{"name": "c", "image": "registry.local/bench:1.0",
                                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}).encode()


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- a lean HTTP/1.1 client ----------------------------------------------------------------------

class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time; answers must carry Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1  # bytes of the current answer (head + body), once its head is complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).lower()
            j = head.find(b"\r\ncontent-length:")
            if j < 0:
                raise RuntimeError("answer without Content-Length")
            k = head.find(b"\r\n", j + 2)
            self.need = i + 4 + int(head[j + 17:k if k > 0 else len(head)])
        if len(self.buf) >= self.need:
            status = int(self.buf[9:12])
            body = bytes(self.buf[self.buf.find(b"\r\n\r\n") + 4:self.need])
            del self.buf[:self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.transport.write(head + body)
        return await self.waiter


async def connect(port: int, ctx: ssl.SSLContext, factory: Any = Conn) -> Any:
    _, proto = await asyncio.get_running_loop().create_connection(
        factory, "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    return proto


class WatchConn(asyncio.Protocol):
    """A watch stream: every received line with the change marker records its latency."""

    MARK = b'"data":{"k":"'

    def __init__(self, sent: dict[int, float], seen: dict[int, list[float]], on_event: Any) -> None:
        self.sent = sent
        self.seen = seen
        self.on_event = on_event
        self.tail = b""
        self.started = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.started.done():
            self.started.set_result(None)
        data = self.tail + data
        i = 0
        while True:
            j = data.find(self.MARK, i)
            if j < 0:
                break
            e = data.find(b'"', j + len(self.MARK))
            if e < 0:
                break
            k = int(data[j + len(self.MARK):e])
            self.seen[k].append(now - self.sent[k])
            self.on_event()
            i = e
        self.tail = data[max(i, len(data) - 64):]  # a marker split across two reads

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError(f"watch connection lost: {exc}"))


# --- the phases ----------------------------------------------------------------------------------

async def bench_lean(api: ApiServerProcess, n: int, clients: int, watchers: int, changes: int) -> dict[str, float]:
    ctx = api.ssl_context()
    res: dict[str, float] = {}
    conns: list[Conn] = await asyncio.gather(*(connect(api.port, ctx) for _ in range(clients)))
    path = "/api/v1/namespaces/default/pods"
    lat: list[float] = []
    counter = iter(range(n))
    errors = 0
    bodies = [pod(f"bench-{i:05d}") for i in range(n)]

    async def worker(c: Conn) -> None:
        nonlocal errors
        for i in counter:
            t = time.perf_counter()
            status, _ = await c.request("POST", path, bodies[i])
            lat.append(time.perf_counter() - t)
            if status != 201:
                errors += 1

    for c in conns:  # warm up: the first request on each connection
        await c.request("GET", "/version")
    cpu0, own0 = cpu_seconds(api.proc.pid), own_cpu()  # type: ignore[union-attr]
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    dt = time.perf_counter() - t0
    res["creates/s"] = n / dt
    res["create p50 ms"] = pct(lat, 0.5) * 1000
    res["create p99 ms"] = pct(lat, 0.99) * 1000
    res["create errors"] = errors
    res["server ms/create"] = (cpu_seconds(api.proc.pid) - cpu0) / n * 1000  # type: ignore[union-attr]
    res["client ms/create"] = (own_cpu() - own0) / n * 1000
    t = time.perf_counter()
    _, body = await conns[0].request("GET", path)
    res["list s"] = time.perf_counter() - t
    res["list items"] = len(json.loads(body)["items"])
    res["list MB"] = len(body) / 1e6
    for c in conns[1:]:
        c.transport.close()  # type: ignore[union-attr]

    cm = "/api/v1/namespaces/default/configmaps"
    _, body = await conns[0].request("GET", cm)
    rv = json.loads(body)["metadata"]["resourceVersion"]
    seen: dict[int, list[float]] = {i: [] for i in range(changes)}
    sent: dict[int, float] = {}
    done = asyncio.Event()
    total = 0

    def on_event() -> None:
        nonlocal total
        total += 1
        if total >= watchers * changes:
            done.set()

    wpath = f"{cm}?watch=true&resourceVersion={rv}&labelSelector=bench%3Dwatch&timeoutSeconds=120"

    async def open_watch() -> WatchConn:
        w: WatchConn = await connect(api.port, ctx, lambda: WatchConn(sent, seen, on_event))
        assert w.transport is not None
        w.transport.write(f"GET {wpath} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode())
        await w.started  # the response head: the server has registered the watch
        return w

    ws: list[WatchConn] = []
    for i in range(0, watchers, 100):  # 100 handshakes at a time
        ws += await asyncio.gather(*(open_watch() for _ in range(min(100, watchers - i))))
    await asyncio.sleep(0.5)
    cpu0, own0 = cpu_seconds(api.proc.pid), own_cpu()  # type: ignore[union-attr]
    for k in range(changes):
        body = json.dumps({"metadata": {"name": f"watch-{k}", "labels": {"bench": "watch"}},
                           "data": {"k": str(k)}}).encode()
        sent[k] = time.perf_counter()
        await conns[0].request("POST", cm, body)
        await asyncio.sleep(0.2)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 30)
    res["server ms/change"] = (cpu_seconds(api.proc.pid) - cpu0) / changes * 1000  # type: ignore[union-attr]
    res["client ms/change"] = (own_cpu() - own0) / changes * 1000
    for w in ws:
        w.transport.close()  # type: ignore[union-attr]
    conns[0].transport.close()  # type: ignore[union-attr]
    all_lat = [x for v in seen.values() for x in v]
    res["watch events"] = len(all_lat)
    res["watch p50 ms"] = pct(all_lat, 0.5) * 1000
    res["watch p99 ms"] = pct(all_lat, 0.99) * 1000
    return res


async def bench_aiohttp(api: ApiServerProcess, n: int, clients: int, watchers: int, changes: int) -> dict[str, float]:
    """The same phases with aiohttp's client (one task per watcher reading lines): what a Python
    client library costs; kept to show how much of the figures is the measuring client."""
    import aiohttp

    ssl_ctx = api.ssl_context()
    res: dict[str, float] = {}
    conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=clients)
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

        async def warm() -> None:
            async with s.get(api.url + "/version") as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(clients)))
        cpu0, own0 = cpu_seconds(api.proc.pid), own_cpu()  # type: ignore[union-attr]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        dt = time.perf_counter() - t0
        res["creates/s"] = n / dt
        res["create p50 ms"] = pct(lat, 0.5) * 1000
        res["create p99 ms"] = pct(lat, 0.99) * 1000
        res["create errors"] = errors
        res["server ms/create"] = (cpu_seconds(api.proc.pid) - cpu0) / n * 1000  # type: ignore[union-attr]
        res["client ms/create"] = (own_cpu() - own0) / n * 1000
        t = time.perf_counter()
        async with s.get(url) as r:
            body = await r.read()
        res["list s"] = time.perf_counter() - t
        res["list items"] = len(json.loads(body)["items"])
        res["list MB"] = len(body) / 1e6

    wconn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=0)
    async with aiohttp.ClientSession(connector=wconn, timeout=aiohttp.ClientTimeout(total=None)) as s:
        cm_url = api.url + "/api/v1/namespaces/default/configmaps"
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
                    i = line.find(b'"data":{"k":"') + 13
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
        cpu0, own0 = cpu_seconds(api.proc.pid), own_cpu()  # type: ignore[union-attr]
        for k in range(changes):
            body = json.dumps({"metadata": {"name": f"watch-{k}", "labels": {"bench": "watch"}}, "data": {"k": str(k)}})
            sent[k] = time.perf_counter()
            async with s.post(cm_url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
            await asyncio.sleep(0.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        res["server ms/change"] = (cpu_seconds(api.proc.pid) - cpu0) / changes * 1000  # type: ignore[union-attr]
        res["client ms/change"] = (own_cpu() - own0) / changes * 1000
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
    ap.add_argument("--client", choices=("lean", "aiohttp"), default="lean")
    ap.add_argument("--runs", type=int, default=1, help="runs per backend (a fresh server each); "
                    "with more than one, the median column follows the runs")
    o = ap.parse_args()
    fn = bench_lean if o.client == "lean" else bench_aiohttp
    load = os.getloadavg()[0]
    results: dict[str, dict[str, float]] = {}
    for backend in o.backends.split(","):
        runs = []
        for i in range(o.runs):
            tmp = Path(tempfile.mkdtemp(prefix=f"tug-bench-{backend}-"))
            etcd = None
            try:
                ds = None
                if backend == "etcd":
                    if shutil.which("etcd") is None:
                        print("etcd not installed; skipping")
                        break
                    etcd = EtcdProcess(tmp / "etcd").start()
                    ds = etcd.datastore
                with ApiServerProcess(tmp / "apiserver", ds) as api:
                    try:
                        import uvloop

                        r = uvloop.run(fn(api, o.pods, o.clients, o.watchers, o.changes))
                    except ImportError:
                        r = asyncio.run(fn(api, o.pods, o.clients, o.watchers, o.changes))
            finally:
                if etcd:
                    etcd.stop()
                shutil.rmtree(tmp, ignore_errors=True)
            runs.append(r)
            results[backend if o.runs == 1 else f"{backend} #{i + 1}"] = r
        if len(runs) > 1:
            results[f"{backend} median"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    keys = list(next(iter(results.values())).keys()) if results else []
    names = list(results)
    print(f"client: {o.client}; load average before the run: {load:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"{'':18}" + "".join(f"{n:>15}" for n in names))
    for k in keys:
        print(f"{k:18}" + "".join(f"{results[n][k]:15.2f}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
