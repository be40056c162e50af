"""Per-container state directories under the runtime root, and status from the kernel.

Layout of ``<root>/<id>/``:
  state.json   the runtime's record (written atomically): id, pid, pid start time, bundle,
               created, annotations, the config, cgroup location, monitor pid and start time
  exec.fifo    present while the container is "created"; ``start`` opens it to release init
  exit         written by tug-monitor when init exits: "<exitStatus> <signal> <unix-ns>"
"""

from __future__ import annotations

import os

from tugboat.errors import InvalidArgument, NotFound
from tugboat.runtime import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ID_EXTRA = set("_+-.")


def validate_id(container_id: str) -> None:
    if (not container_id or container_id in (".", "..")
            or not all(ch.isalnum() or ch in _ID_EXTRA for ch in container_id)):
        raise InvalidArgument(f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-', '.'")


def write_atomic(path: str, data: bytes) -> None:
    """Temp file + rename. No fsync: runtime state describes live processes, which do not
    survive a reboot anyway (runc keeps it on tmpfs), and fsync costs milliseconds per start."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def rfc3339(ns: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(ns // 1_000_000_000)) + f"{ns % 1_000_000_000:09d}Z"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    if rest[0] == b"Z" or rest[0] == b"X":
        return None
    return int(rest[19])


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def alive(pid: int, start: int | None) -> bool:
    """Is ``pid`` still the process we started (same start time, not a zombie)?"""
    if not pid:
        return False
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


class StateDir:
    def __init__(self, root: str, container_id: str) -> None:
        validate_id(container_id)
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)

    @property
    def record_path(self) -> str:
        return os.path.join(self.path, "state.json")

    @property
    def fifo(self) -> str:
        return os.path.join(self.path, "exec.fifo")

    @property
    def exit_path(self) -> str:
        return os.path.join(self.path, "exit")

    def exists(self) -> bool:
        return os.path.exists(self.record_path)

    def load(self) -> dict[str, Any]:
        try:
            with open(self.record_path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"container {self.id} does not exist") from None

    def save(self, record: dict[str, Any]) -> None:
        write_atomic(self.record_path, json.dumps(record).encode())

    def exit_info(self) -> tuple[int, int, int] | None:
        try:
            with open(self.exit_path) as f:
                code, sig, when = f.read().split()
            return int(code), int(sig), int(when)
        except (OSError, ValueError):
            return None


def status_of(sd: StateDir, record: dict[str, Any], frozen: bool = False) -> str:
    if sd.exit_info() is not None:
        return "stopped"
    pid = record.get("pid") or 0
    if not alive(pid, record.get("pidStart")):
        return "stopped"
    if frozen:
        return "paused"
    if os.path.exists(sd.fifo):
        return "created"
    return "running"


def oci_state(sd: StateDir, record: dict[str, Any], status: str) -> dict[str, Any]:
    """The OCI state JSON (plus runc's and our extension keys)."""
    out: dict[str, Any] = {  # runc's key order (some tools match the JSON text)
        "ociVersion": record.get("ociVersion", "1.0.2"),
        "id": sd.id,
        "pid": record.get("pid", 0) if status != "stopped" else 0,
        "status": status,
        "bundle": record.get("bundle", ""),
        "rootfs": record.get("rootfs", ""),
        "created": record.get("created", ""),
        "owner": "",
        "annotations": record.get("annotations") or {},
    }
    if status == "stopped":
        info = sd.exit_info()
        if info is not None:
            out["exitStatus"] = info[0]
            out["exitSignal"] = info[1]
            out["finishedAt"] = rfc3339(info[2])
        else:
            out["exitStatus"] = -1  # the monitor is gone and left no record
    return out
