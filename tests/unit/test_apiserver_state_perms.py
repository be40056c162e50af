"""The API server's state is owner-only (security finding S-3): data dir 0700, database files 0600."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tugboat.cluster.apiserver.server import private_dir
from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore


def _mode(p: Path | str) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


async def test_sqlite_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        s = SQLiteStore(str(tmp_path / "state.db"))
        await s.start()
        try:
            await s.create("/registry/secrets/default/x", b'{"data":{"password":"czNjcjN0"}}')
            files = sorted(p.name for p in tmp_path.iterdir())
            assert {"state.db", "state.db-wal", "state.db-shm"} <= set(files), files
            for name in files:
                assert _mode(tmp_path / name) & 0o077 == 0, (name, oct(_mode(tmp_path / name)))
        finally:
            await s.close()
    finally:
        os.umask(old)


async def test_sqlite_tightens_files_an_older_version_left(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "state.db"))
    await s.start()
    await s.create("/registry/a", b"1")
    await s.close()
    for p in tmp_path.iterdir():
        os.chmod(p, 0o644)
    s = SQLiteStore(str(tmp_path / "state.db"))
    await s.start()
    try:
        assert await s.get("/registry/a") is not None  # the data is still there
        for p in tmp_path.iterdir():
            assert _mode(p) & 0o077 == 0, (p.name, oct(_mode(p)))
    finally:
        await s.close()


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    new = tmp_path / "new" / "apiserver"
    private_dir(str(new))
    assert _mode(new) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    private_dir(str(old))
    assert _mode(old) == 0o700


def test_test_etcd_data_dir_is_private(tmp_path: Path) -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    from tugboat.cluster.apiserver.testing import EtcdProcess

    with EtcdProcess(tmp_path / "etcd") as e:
        assert _mode(e.dir / "data") == 0o700
