"""The SQLite store's write path: group commits on the event loop, checkpoints off the loop (the WAL
stays bounded under sustained writes), and a write lock held elsewhere never blocks the loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from tugboat.cluster.apiserver.storage.base import KeyExists, RevisionMismatch
from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore


async def test_sustained_writes_keep_the_wal_bounded_and_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path)
    store.wal_checkpoint_bytes = 256 * 1024  # checkpoint often
    await store.start()
    try:
        start = await store.current_revision()
        watch = store.watch("/registry/", start)
        value = b"v" * 2000
        revs: list[int] = []
        for r in range(60):
            revs += await asyncio.gather(*(store.create(f"/registry/core/configmaps/ns/c{r:02d}-{i:02d}", value)
                                           for i in range(50)))
            # a failing write in the same transaction does not take the others down
            if r % 10 == 0:
                results = await asyncio.gather(store.create("/registry/core/configmaps/ns/c00-00", value),
                                               store.update("/registry/core/configmaps/ns/c00-01", b"x", 1),
                                               return_exceptions=True)
                assert isinstance(results[0], KeyExists) and isinstance(results[1], RevisionMismatch)
        assert revs == list(range(start + 1, start + 1 + 3000))  # one revision per write, in order
        assert os.path.getsize(path + "-wal") < 8 * 1024 * 1024
        assert store._commits >= 60
        res = await store.list("/registry/core/configmaps/ns/")
        assert len(res.items) == 3000 and all(kv.value == value for kv in res.items)
        got = []
        async for ev in watch:
            got.append(ev.revision)
            if len(got) == 3000:
                break
        assert got == revs
    finally:
        await store.close()
    # everything is in the file after a restart
    again = SQLiteStore(path)
    await again.start()
    try:
        assert await again.count("/registry/core/configmaps/ns/") == 3000
        assert await again.current_revision() == revs[-1]
    finally:
        await again.close()


async def test_write_lock_held_elsewhere_delays_writes_without_blocking_the_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path)
    await store.start()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # as a checkpoint or another writer would hold it
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        write = asyncio.create_task(store.create("/registry/core/configmaps/ns/held", b"{}"))
        t0 = time.monotonic()
        await asyncio.sleep(0.3)
        assert not write.done()
        assert ticks >= 10  # the loop kept running while the write waited
        other.execute("COMMIT")
        rev = await asyncio.wait_for(write, 5)
        assert time.monotonic() - t0 >= 0.3
        assert (await store.get("/registry/core/configmaps/ns/held")).mod_revision == rev  # type: ignore[union-attr]
        t.cancel()
    finally:
        other.close()
        await store.close()
