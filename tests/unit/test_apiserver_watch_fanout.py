"""Watch fan-out: many watchers with different selectors, formats and paths on one resource each
get exactly their own events (the per-event memo is shared between watchers of the same version
and selectors only), and the watch cache's prefix index forgets closed watchers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore
from tugboat.cluster.apiserver.testing import ApiServerProcess
from tugboat.cluster.apiserver.watchcache import WatchCache

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    with ApiServerProcess(tmp_path_factory.mktemp("fanout")) as a:
        yield a


async def _fanout(api: ApiServerProcess) -> dict[str, list[list[tuple[str, Any]]]]:
    base = api.url + "/api/v1/namespaces/default/configmaps"
    conn = aiohttp.TCPConnector(ssl=api.ssl_context(), limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        async with s.get(base) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        groups: dict[str, tuple[str, dict[str, str], dict[str, str], int]] = {
            # name: (url, query, headers, events expected)
            "all": (base, {}, {}, 4),
            "tier-a": (base, {"labelSelector": "tier=a"}, {}, 2),
            "tier-b": (base, {"labelSelector": "tier=b"}, {}, 3),
            "table-a": (base, {"labelSelector": "tier=a"}, {"Accept": TABLE}, 2),
            "legacy-x1": (api.url + "/api/v1/watch/namespaces/default/configmaps/x1", {}, {}, 2),
            "field-x1": (base, {"fieldSelector": "metadata.name=x1"}, {}, 2),
        }
        results: dict[str, list[list[tuple[str, Any]]]] = {g: [] for g in groups}
        started = 0
        all_started = asyncio.Event()
        n_watchers = 6 * len(groups)

        async def watch(group: str) -> None:
            nonlocal started
            url, query, headers, want = groups[group]
            params = {"resourceVersion": rv, "timeoutSeconds": "30", **query}
            if "/watch/" not in url:
                params["watch"] = "true"
            got: list[tuple[str, Any]] = []
            results[group].append(got)
            async with s.get(url, params=params, headers=headers) as r:
                assert r.status == 200
                started += 1
                if started == n_watchers:
                    all_started.set()
                async for line in r.content:
                    ev = json.loads(line)
                    obj = ev["object"]
                    if obj.get("kind") == "Table":
                        got.append((ev["type"], obj))
                    else:
                        got.append((ev["type"], (obj["metadata"]["name"], (obj["metadata"].get("labels") or {}).get("tier"))))
                    if len(got) == want:
                        return

        tasks = [asyncio.create_task(watch(g)) for g in groups for _ in range(6)]
        await asyncio.wait_for(all_started.wait(), 30)
        await asyncio.sleep(0.2)  # the handlers register their watches right after the headers

        async def req(method: str, url: str, body: Any, ctype: str = "application/json") -> None:
            async with s.request(method, url, data=json.dumps(body) if body is not None else None,
                                 headers={"Content-Type": ctype}) as r:
                assert r.status in (200, 201), await r.text()

        await req("POST", base, {"metadata": {"name": "x1", "labels": {"tier": "a"}}})
        await req("POST", base, {"metadata": {"name": "x2", "labels": {"tier": "b"}}})
        await req("PATCH", base + "/x1", {"metadata": {"labels": {"tier": "b"}}}, "application/merge-patch+json")
        await req("DELETE", base + "/x2", None)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return results


def test_watchers_with_different_selectors_get_their_own_events(api: ApiServerProcess) -> None:
    results = asyncio.run(_fanout(api))
    expect = {
        "all": [("ADDED", ("x1", "a")), ("ADDED", ("x2", "b")), ("MODIFIED", ("x1", "b")), ("DELETED", ("x2", "b"))],
        "tier-a": [("ADDED", ("x1", "a")), ("DELETED", ("x1", "b"))],  # x1 left the selection
        "tier-b": [("ADDED", ("x2", "b")), ("ADDED", ("x1", "b")), ("DELETED", ("x2", "b"))],
        "legacy-x1": [("ADDED", ("x1", "a")), ("MODIFIED", ("x1", "b"))],
        "field-x1": [("ADDED", ("x1", "a")), ("MODIFIED", ("x1", "b"))],
    }
    for group, want in expect.items():
        for got in results[group]:
            assert got == want, group
    for got in results["table-a"]:
        assert [t for t, _ in got] == ["ADDED", "DELETED"]
        first, second = got[0][1], got[1][1]
        assert first["columnDefinitions"] and not second["columnDefinitions"]  # columns once per watch
        assert [r["cells"][0] for r in first["rows"] + second["rows"]] == ["x1", "x1"]


async def test_prefix_index_forgets_closed_watchers(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    await store.start()
    cache = WatchCache(store)
    await cache.start()
    try:
        seen: list[tuple[str, str]] = []
        a = cache.watch("/registry/core/pods/", cache.rev, lambda ev: seen.append(("a", ev.key)) is None)
        b = cache.watch("/registry/core/pods/ns1/", cache.rev, lambda ev: seen.append(("b", ev.key)) is None)
        c = cache.watch("/registry/core/configmaps/", cache.rev, lambda ev: seen.append(("c", ev.key)) is None)
        assert set(cache.by_prefix) == {"/registry/core/pods/", "/registry/core/pods/ns1/", "/registry/core/configmaps/"}
        await store.create("/registry/core/pods/ns1/p", b"{}")
        rev = await store.create("/registry/core/pods/ns2/q", b"{}")
        await cache.wait_for(rev)
        assert sorted(seen) == [("a", "/registry/core/pods/ns1/p"), ("a", "/registry/core/pods/ns2/q"),
                                ("b", "/registry/core/pods/ns1/p")]
        b.close()
        a.close()
        assert set(cache.by_prefix) == {"/registry/core/configmaps/"} and cache.watchers == {c}
        # a sink that reports its client gone is closed and dropped from the index
        c2 = cache.watch("/registry/core/configmaps/", cache.rev, lambda ev: False)
        rev = await store.create("/registry/core/configmaps/ns1/x", b"{}")
        await cache.wait_for(rev)
        assert c2.closed and list(cache.by_prefix["/registry/core/configmaps/"]) == [c]
        assert seen[-1] == ("c", "/registry/core/configmaps/ns1/x")
    finally:
        await cache.stop()
        await store.close()
