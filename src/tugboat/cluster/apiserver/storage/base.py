"""The narrow storage interface under the Kubernetes API server (the shape kine gives k3s).

Keys are strings (``/registry/<group>/<resource>/[<namespace>/]<name>``), values are opaque bytes
(the object's JSON without ``metadata.resourceVersion``). Every write advances one global,
strictly increasing revision; an object's ``resourceVersion`` is the revision of its last write.

Backends: :mod:`.sqlite` (embedded, default) and :mod:`.etcd` (etcd v3 via its JSON gateway).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass


class StorageError(Exception):
    """Base of the storage layer's errors; the API server maps them to Status objects."""


class KeyExists(StorageError):
    """create() of a key that already exists."""


class KeyNotFound(StorageError):
    """update()/delete() of a key that does not exist."""


class RevisionMismatch(StorageError):
    """update()/delete() whose expected revision is not the key's current one."""

    def __init__(self, current: KeyValue | None) -> None:
        super().__init__("revision mismatch")
        self.current = current


class Compacted(StorageError):
    """A read or watch at a revision that compaction has removed."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted (compact revision {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


class StoreUnavailable(StorageError):
    """The backend cannot be reached."""


@dataclass(slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(slots=True)
class Event:
    """One change. ``type`` is "PUT" or "DELETE"; for DELETE, ``value`` is the last value."""

    type: str
    key: str
    value: bytes
    revision: int
    create_revision: int
    prev_value: bytes | None = None
    created: bool = False  # PUT that created the key


@dataclass(slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the revision the list was served at
    more: bool  # a limit cut the list short


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store(abc.ABC):
    """What the API server needs from a datastore. All methods are coroutines."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def compact_revision(self) -> int: ...

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        """Live keys starting with ``prefix`` (sorted), as of ``revision`` (0 = now); ``start_after``
        excludes keys <= it; ``limit`` 0 means no limit. Raises Compacted for a compacted revision."""

    @abc.abstractmethod
    async def count(self, prefix: str) -> int: ...

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Create ``key``; returns the new revision. Raises KeyExists."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Replace ``key`` if its mod revision is ``expected_revision``. Raises KeyNotFound,
        RevisionMismatch (carrying the current value)."""

    @abc.abstractmethod
    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        """Delete ``key`` (if ``expected_revision`` is non-zero, only at that revision); returns the
        deletion's revision and the last value. Raises KeyNotFound, RevisionMismatch."""

    @abc.abstractmethod
    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:
        """Every change to keys under ``prefix`` with revision > ``after_revision``, in order, then
        live changes until the iterator is closed. Raises Compacted (on first iteration) when
        ``after_revision`` is older than the compact revision."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history at and before ``revision`` (the latest value of each key stays)."""
