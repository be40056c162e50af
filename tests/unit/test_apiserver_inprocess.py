"""The API server's object logic in-process (real SQLite, no HTTP): event expiry, pagination with
selectors, deletion semantics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tugboat.cluster.apiserver.handlers import Selector
from tugboat.cluster.apiserver.meta import ApiError
from tugboat.cluster.apiserver.server import APIServer, build
from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[APIServer]:
    store = SQLiteStore(str(tmp_path / "state.db"))
    s = await build(store, require_auth=False)
    try:
        yield s
    finally:
        await s.stop()
        await store.close()


def rt(srv: APIServer, group: str, version: str, plural: str):  # type: ignore[no-untyped-def]
    r = srv.registry.get(group, version, plural)
    assert r is not None
    return r


async def test_event_expiry(srv: APIServer) -> None:
    ev = rt(srv, "", "v1", "events")
    await srv.objects.create(ev, "default", {"metadata": {"name": "old"}, "involvedObject": {"kind": "Pod", "name": "p"},
                                             "lastTimestamp": "2020-01-01T00:00:00Z"})
    await srv.objects.create(ev, "default", {"metadata": {"name": "new"}, "involvedObject": {"kind": "Pod", "name": "p"}})
    assert await srv.expire_events_once(ev) == 1
    items, _, _, _ = await srv.objects.list(ev, "default", Selector(ev, None, None))
    assert [i["metadata"]["name"] for i in items] == ["new"]


async def test_pagination_with_selector(srv: APIServer) -> None:
    cm = rt(srv, "", "v1", "configmaps")
    for i in range(25):
        await srv.objects.create(cm, "default", {"metadata": {"name": f"c{i:02d}", "labels": {"odd": str(i % 2)}}})
    sel = Selector(cm, "odd=1", None)
    names: list[str] = []
    token = None
    pages = 0
    while True:
        items, _, token, _ = await srv.objects.list(cm, "default", sel, limit=4, cont=token)
        names += [i["metadata"]["name"] for i in items]
        pages += 1
        if not token:
            break
    assert names == [f"c{i:02d}" for i in range(1, 25, 2)] and pages in (3, 4)  # a last page may be empty
    with pytest.raises(ApiError) as ei:
        await srv.objects.list(cm, "default", sel, limit=4, cont="garbage")
    assert ei.value.code == 400


async def test_finalizers_and_pod_graceful_deletion(srv: APIServer) -> None:
    cm = rt(srv, "", "v1", "configmaps")
    await srv.objects.create(cm, "default", {"metadata": {"name": "f", "finalizers": ["example.com/keep"]}})
    obj, gone = await srv.objects.delete(cm, "default", "f", {})
    assert not gone and obj["metadata"]["deletionTimestamp"]

    def drop(o: dict) -> dict:
        o["metadata"]["finalizers"] = []
        return o

    with pytest.raises(ApiError) as ei:  # no new finalizers once deletion started
        await srv.objects.update(cm, "default", "f", lambda o: {**o, "metadata": {**o["metadata"],
                                                                                   "finalizers": ["a", "b"]}})
    assert ei.value.code == 422
    await srv.objects.update(cm, "default", "f", drop)
    with pytest.raises(ApiError):
        await srv.objects.get(cm, "default", "f")
    pod = rt(srv, "", "v1", "pods")
    await srv.objects.create(pod, "default", {"metadata": {"name": "p"}, "spec": {
        "nodeName": "n1", "terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "x"}]}})
    obj, gone = await srv.objects.delete(pod, "default", "p", {})
    assert not gone and obj["metadata"]["deletionGracePeriodSeconds"] == 5
    obj, gone = await srv.objects.delete(pod, "default", "p", {"gracePeriodSeconds": 0})
    assert gone
    # preconditions
    await srv.objects.create(cm, "default", {"metadata": {"name": "pre"}})
    with pytest.raises(ApiError) as ei:
        await srv.objects.delete(cm, "default", "pre", {"preconditions": {"uid": "nope"}})
    assert ei.value.code == 409


async def test_inflight_limit_and_legacy_watch_path(srv: APIServer) -> None:
    import json

    from aiohttp.test_utils import TestClient, TestServer

    srv.require_auth = False
    async with TestClient(TestServer(srv.make_app())) as c:
        srv.max_mutating_inflight = 0
        r = await c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        assert (await r.json())["reason"] == "TooManyRequests"
        srv.max_mutating_inflight = 200
        r = await c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})
        assert r.status == 201
        await c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "y"}})
        r = await c.get("/api/v1/watch/namespaces/default/configmaps/x?timeoutSeconds=1")
        events = [json.loads(line) for line in (await r.text()).splitlines()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "x")]
