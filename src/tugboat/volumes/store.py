"""Named volumes of the ``local`` driver: ``<root>/volumes/<name>/_data`` plus ``meta.json``.

``meta.json`` (written atomically) holds Name, Driver, Labels, Options, CreatedAt and
``Anonymous``. The engine keeps the in-use references (which containers mount which volume).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable

from tugboat.engine.util import now_rfc3339, read_json, write_json_atomic
from tugboat.errors import Conflict, InvalidArgument, NotFound

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class VolumeStore:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._lock = threading.RLock()

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self._dir(name), "_data")

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self._dir(name), "meta.json"))

    def create(self, name: str | None = None, *, driver: str = "local", labels: dict | None = None,
               options: dict | None = None, anonymous: bool = False) -> tuple[dict, bool]:
        """The volume (created if missing) and whether it was created now."""
        driver = driver or "local"
        if driver != "local":
            raise NotFound(f"error looking up volume plugin {driver}: plugin \"{driver}\" not found")
        if not name:
            name = secrets.token_hex(32)
            anonymous = True
        if not NAME_RE.match(name) or "/" in name:
            raise InvalidArgument(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                "directory, use absolute path"
            )
        with self._lock:
            if self.exists(name):
                return self.inspect(name), False
            os.makedirs(self.mountpoint(name), exist_ok=True)
            meta = {
                "Name": name,
                "Driver": driver,
                "Labels": dict(labels or {}),
                "Options": dict(options or {}),
                "CreatedAt": now_rfc3339().split(".")[0] + "Z",
                "Anonymous": anonymous,
                "CopiedUp": False,
            }
            write_json_atomic(os.path.join(self._dir(name), "meta.json"), meta)
            return self._view(meta), True

    def _view(self, meta: dict) -> dict:
        labels = dict(meta.get("Labels") or {})
        if meta.get("Anonymous"):
            labels.setdefault("com.docker.volume.anonymous", "")
        return {
            "CreatedAt": meta["CreatedAt"],
            "Driver": meta["Driver"],
            "Labels": labels,
            "Mountpoint": self.mountpoint(meta["Name"]),
            "Name": meta["Name"],
            "Options": meta.get("Options") or None,
            "Scope": "local",
        }

    def meta(self, name: str) -> dict:
        try:
            return read_json(os.path.join(self._dir(name), "meta.json"))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"get {name}: no such volume") from None

    def set_meta(self, name: str, **kv: object) -> None:
        with self._lock:
            meta = self.meta(name)
            meta.update(kv)
            write_json_atomic(os.path.join(self._dir(name), "meta.json"), meta)

    def inspect(self, name: str) -> dict:
        return self._view(self.meta(name))

    def list(self) -> list[dict]:
        out = []
        for name in sorted(os.listdir(self.root)):
            try:
                out.append(self.inspect(name))
            except NotFound:
                continue
        return out

    def remove(self, name: str, *, in_use: Callable[[str], list[str]] | None = None,
               force: bool = False) -> None:
        with self._lock:
            if not self.exists(name):
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = in_use(name) if in_use else []
            if users:
                raise Conflict(
                    f"remove {name}: volume is in use - [{', '.join(users)}]"
                )
            d = self._dir(name)
            tmp = os.path.join(self.root, f".rm-{name}-{secrets.token_hex(4)}")
            os.rename(d, tmp)
            shutil.rmtree(tmp, ignore_errors=True)

    def size(self, name: str) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.mountpoint(name)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total
