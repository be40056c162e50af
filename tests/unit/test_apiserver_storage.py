"""The storage interface, run against SQLite and a real etcd."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tugboat.cluster.apiserver.storage.base import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    RevisionMismatch,
    Store,
)
from tugboat.cluster.apiserver.testing import EtcdProcess


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if shutil.which("etcd") is None:
        from conftest import require_binary

        require_binary("etcd")
    with EtcdProcess(tmp_path_factory.mktemp("etcd")) as e:
        yield e


_counter = [0]


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, str]]:
    _counter[0] += 1
    if request.param == "sqlite":
        from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore

        s: Store = SQLiteStore(str(tmp_path / "state.db"))
        prefix = "/registry/"
    else:
        from tugboat.cluster.apiserver.storage.etcd import EtcdStore

        e = request.getfixturevalue("etcd")
        s = EtcdStore([e.url])
        prefix = f"/t{_counter[0]}/registry/"  # one etcd for the module: a key space per test
    await s.start()
    try:
        yield s, prefix
    finally:
        await s.close()


async def test_create_get_update_delete(store: tuple[Store, str]) -> None:
    s, p = store
    r1 = await s.create(p + "pods/default/a", b'{"v":1}')
    assert r1 > 0
    kv = await s.get(p + "pods/default/a")
    assert kv is not None and kv.value == b'{"v":1}' and kv.mod_revision == r1 and kv.create_revision == r1
    with pytest.raises(KeyExists):
        await s.create(p + "pods/default/a", b"{}")
    r2 = await s.update(p + "pods/default/a", b'{"v":2}', r1)
    assert r2 > r1
    with pytest.raises(RevisionMismatch) as ei:
        await s.update(p + "pods/default/a", b'{"v":3}', r1)
    assert ei.value.current is not None and ei.value.current.value == b'{"v":2}'
    with pytest.raises(KeyNotFound):
        await s.update(p + "pods/default/zz", b"{}", 1)
    with pytest.raises(RevisionMismatch):
        await s.delete(p + "pods/default/a", r1)
    r3, last = await s.delete(p + "pods/default/a", r2)
    assert r3 > r2 and last.value == b'{"v":2}'
    assert await s.get(p + "pods/default/a") is None
    with pytest.raises(KeyNotFound):
        await s.delete(p + "pods/default/a")
    assert await s.current_revision() >= r3


async def test_list_prefix_limit_and_revision(store: tuple[Store, str]) -> None:
    s, p = store
    revs = {}
    for ns in ("a", "b"):
        for i in range(5):
            revs[(ns, i)] = await s.create(f"{p}pods/{ns}/p{i}", f"{ns}{i}".encode())
    await s.create(p + "podsx/a/other", b"x")  # a longer resource name must not leak into pods/
    res = await s.list(p + "pods/")
    assert [kv.key.rsplit("/", 2)[-2:] for kv in res.items][:2] == [["a", "p0"], ["a", "p1"]]
    assert len(res.items) == 10 and not res.more
    res = await s.list(p + "pods/a/", limit=2)
    assert [kv.value for kv in res.items] == [b"a0", b"a1"] and res.more
    res2 = await s.list(p + "pods/a/", limit=2, start_after=res.items[-1].key, revision=res.revision)
    assert [kv.value for kv in res2.items] == [b"a2", b"a3"]
    assert await s.count(p + "pods/b/") == 5
    # a list at an older revision sees the old state
    snap = await s.current_revision()
    await s.update(p + "pods/a/p0", b"changed", revs[("a", 0)])
    await s.delete(p + "pods/a/p1")
    old = await s.list(p + "pods/a/", revision=snap)
    assert [kv.value for kv in old.items] == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    new = await s.list(p + "pods/a/")
    assert [kv.value for kv in new.items] == [b"changed", b"a2", b"a3", b"a4"]


async def _collect(it: AsyncIterator[Event], n: int, timeout: float = 5) -> list[Event]:
    out: list[Event] = []

    async def run() -> None:
        async for ev in it:
            out.append(ev)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_watch_history_then_live(store: tuple[Store, str]) -> None:
    s, p = store
    start = await s.current_revision()
    r1 = await s.create(p + "cm/x", b"1")
    await s.update(p + "cm/x", b"2", r1)
    it = s.watch(p + "cm/", start).__aiter__()
    first = await _collect(it, 2)
    assert [(e.type, e.value, e.created) for e in first] == [("PUT", b"1", True), ("PUT", b"2", False)]
    assert first[1].prev_value == b"1"

    async def later() -> None:
        await asyncio.sleep(0.1)
        await s.create(p + "other/y", b"not mine")
        await s.delete(p + "cm/x")

    t = asyncio.create_task(later())
    live = await _collect(it, 1)
    await t
    assert live[0].type == "DELETE" and live[0].key == p + "cm/x" and live[0].value == b"2"
    await it.aclose()  # type: ignore[attr-defined]


async def test_compaction_and_too_old_watch(store: tuple[Store, str]) -> None:
    s, p = store
    r = await s.create(p + "k", b"1")
    for i in range(5):
        r = await s.update(p + "k", str(i).encode(), r)
    await s.compact(r - 1)
    kv = await s.get(p + "k")
    assert kv is not None and kv.value == b"4"  # the latest value survives compaction
    with pytest.raises(Compacted):
        await s.list(p, revision=r - 3)
    with pytest.raises(Compacted):
        it = s.watch(p, r - 4).__aiter__()
        await asyncio.wait_for(it.__anext__(), 5)


async def test_sqlite_file_has_one_writer(tmp_path: Path) -> None:
    from tugboat.cluster.apiserver.storage.base import StoreUnavailable
    from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore

    a = SQLiteStore(str(tmp_path / "one.db"))
    await a.start()
    try:
        with pytest.raises(StoreUnavailable):
            await SQLiteStore(str(tmp_path / "one.db")).start()
    finally:
        await a.close()
    b = SQLiteStore(str(tmp_path / "one.db"))  # free again once the first one closed
    await b.start()
    await b.close()
