"""ContentStore: verified ingest, atomic commit, multi-process safety."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os

import pytest

from tugboat.content.store import ContentStore
from tugboat.errors import DataCorruption, NotFound


def _snapshot(root: str) -> list[tuple[str, int]]:
    out = []
    for dp, _dn, fn in os.walk(root):
        for f in fn:
            p = os.path.join(dp, f)
            out.append((os.path.relpath(p, root), os.path.getsize(p)))
    return sorted(out)


def test_put_read_list_delete(tmp_path) -> None:
    cs = ContentStore(str(tmp_path / "content"))
    d = cs.put(b"hello")
    assert d == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert cs.exists(d) and cs.size(d) == 5 and cs.read(d) == b"hello"
    with open(cs.path(d), "rb") as f:
        assert f.read() == b"hello"
    assert list(cs.list()) == [d]
    assert cs.put(b"hello", d) == d  # idempotent
    assert cs.verify(d)
    cs.delete(d)
    assert not cs.exists(d)
    with pytest.raises(NotFound):
        cs.read(d)
    assert os.listdir(cs.ingest_dir) == []


def test_sha512(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    want = "sha512:" + hashlib.sha512(b"x" * 100).hexdigest()
    assert cs.put(b"x" * 100, want) == want
    assert cs.read(want) == b"x" * 100
    with cs.writer(algorithm="sha512") as w:
        w.write(b"abc")
        assert w.commit().startswith("sha512:")


def test_writer_streaming_and_expected_size(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with cs.writer(digest, len(data)) as w:
        w.copy_from(io.BytesIO(data))
        assert w.commit() == digest
    assert cs.read(digest) == data


@pytest.mark.parametrize("case", ["digest", "short", "long"])
def test_corrupt_input_leaves_store_unchanged(tmp_path, case: str) -> None:
    cs = ContentStore(str(tmp_path / "c"))
    cs.put(b"existing")
    before = _snapshot(cs.root)
    good = b"the real blob"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    with pytest.raises(DataCorruption):
        if case == "digest":
            cs.put(b"the fake blob", digest)
        elif case == "short":
            with cs.writer(digest, len(good) + 5) as w:
                w.write(good)
                w.commit()
        else:
            with cs.writer(digest, 3) as w:
                w.write(good)
    assert _snapshot(cs.root) == before
    assert not cs.exists(digest)


def test_exception_in_writer_aborts(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    with pytest.raises(RuntimeError), cs.writer() as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert os.listdir(cs.ingest_dir) == []
    assert list(cs.list()) == []


def _writer_proc(root: str, data: bytes, n: int) -> None:
    cs = ContentStore(root)
    for _ in range(n):
        cs.put(data)


def test_multi_process_same_blob(tmp_path) -> None:
    root = str(tmp_path / "c")
    data = os.urandom(256 << 10)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer_proc, args=(root, data, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cs = ContentStore(root)
    digests = list(cs.list())
    assert len(digests) == 1 and cs.read(digests[0]) == data and cs.verify(digests[0])
    assert os.listdir(cs.ingest_dir) == []


def test_cleanup_ingest_removes_dead_writers(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    os.makedirs(cs.ingest_dir)
    dead = os.path.join(cs.ingest_dir, "999999-abc")  # pid above pid_max: never alive
    with open(dead, "wb") as f:
        f.write(b"half")
    mine = cs.writer()
    mine.write(b"in flight")
    assert cs.cleanup_ingest() == 1
    assert not os.path.exists(dead) and os.path.exists(mine.tmp_path)
    mine.abort()
