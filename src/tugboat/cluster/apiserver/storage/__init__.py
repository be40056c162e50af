"""Storage backends behind :class:`tugboat.cluster.apiserver.storage.base.Store`."""

from __future__ import annotations

import os

from tugboat.cluster.apiserver.storage.base import Store
from tugboat.errors import InvalidArgument


def open_store(datastore: str | None, data_dir: str) -> Store:
    """``sqlite:///PATH`` (default: DATA_DIR/state.db) or ``etcd://HOST:PORT[,HOST:PORT…]``."""
    if not datastore or datastore == "sqlite":
        from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore

        return SQLiteStore(os.path.join(data_dir, "state.db"))
    if datastore.startswith("sqlite://"):
        from tugboat.cluster.apiserver.storage.sqlite import SQLiteStore

        path = datastore[len("sqlite://"):]
        return SQLiteStore(path or os.path.join(data_dir, "state.db"))
    if datastore.startswith(("etcd://", "http://")):
        from tugboat.cluster.apiserver.storage.etcd import EtcdStore

        rest = datastore.split("://", 1)[1]
        return EtcdStore([f"http://{h}" for h in rest.split(",") if h])
    raise InvalidArgument(f"unknown datastore {datastore!r}: use sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT]")
