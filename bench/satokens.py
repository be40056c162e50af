"""Service account tokens: what they cost the API server (in-process, real SQLite, no HTTP).

1. pod create with the ServiceAccount admission (account lookup + token volume) vs a pod that opts
   out (``automountServiceAccountToken: false``: the lookup only) — the admission's share of a create;
2. TokenRequest (a pod-bound token: account + pod + node reads, an ES256 signature);
3. authentication of a bound token, which every request of an in-cluster client pays: the
   account and pod reads (the ES256 signature check is remembered per token; its cost, paid on
   a token's first use, is shown apart).

There is no peer in this repository to run side by side; for scale, kube-apiserver caches token
authentication results for 10 s, which we do not (a deleted pod's token fails on the next request).

Run: ``.venv/bin/python bench/satokens.py [--n 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tugboat.cluster.apiserver import serviceaccounts as sat
from tugboat.cluster.apiserver.server import build
from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore


async def timed(n: int, fn: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """(mean µs, p99 µs) of ``n`` sequential calls."""
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return statistics.fmean(samples), samples[int(len(samples) * 0.99) - 1]


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(f"{d}/state.db")
        srv = await build(store, require_auth=False)
        try:
            pods = srv.registry.get("", "v1", "pods")
            assert pods is not None

            def pod(name: str, auto: bool) -> dict[str, Any]:
                spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1"}]}
                if not auto:
                    spec["automountServiceAccountToken"] = False
                return {"metadata": {"name": name}, "spec": spec}

            rows = []
            samples: dict[bool, list[float]] = {True: [], False: []}
            for i in range(n):  # interleaved, so both see the same store size and machine load
                for auto in (True, False):
                    t = time.perf_counter()
                    await srv.objects.create(pods, "default", pod(f"{'a' if auto else 'b'}{i}", auto))
                    samples[auto].append((time.perf_counter() - t) * 1e6)
            for label, auto in (("pod create, token volume (admission)", True),
                                ("pod create, automount false", False)):
                xs = sorted(samples[auto])
                rows.append((label, statistics.fmean(xs), xs[int(len(xs) * 0.99) - 1]))
            p0 = await srv.objects.get(pods, "default", "a0")
            ref = {"kind": "Pod", "apiVersion": "v1", "name": "a0", "uid": p0["metadata"]["uid"]}
            body = {"spec": {"expirationSeconds": 3607, "boundObjectRef": ref}}
            rows.append(("TokenRequest (pod-bound)", *await timed(
                n, lambda i: sat.token_request(srv.objects, srv.sa_issuer, "default", "default", body))))
            tok = (await sat.token_request(srv.objects, srv.sa_issuer, "default", "default", body))["status"]["token"]
            rows.append(("authenticate a bound token", *await timed(
                n, lambda i: sat.authenticate(srv.objects, srv.sa_issuer, tok))))

            async def verify(_: int) -> None:
                srv.sa_issuer._verify_signature(tok)  # what a token's first use costs on top

            rows.append(("ES256 signature check (first use only)", *await timed(n, verify)))
            print(f"service account tokens, n={n} each (sequential, in-process, SQLite)")
            print(f"{'operation':42} {'mean µs':>9} {'p99 µs':>9}")
            for label, mean, p99 in rows:
                print(f"{label:42} {mean:9.0f} {p99:9.0f}")
        finally:
            await srv.stop()
            await store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    asyncio.run(main(ap.parse_args().n))
