"""Registry credentials in docker's format: ``$DOCKER_CONFIG/config.json`` (default ~/.docker).

``auths`` maps a registry (``https://index.docker.io/v1/`` for Docker Hub, ``host:port`` for the
rest) to ``{"auth": base64("user:password")}``, exactly what ``docker login`` writes, so either
tool reads the other's logins. Written atomically, mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from tugboat.util.fs import write_atomic

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_KEY)


def normalize_registry(server: str) -> str:
    """The key docker uses in ``auths``: Docker Hub's legacy URL, else the bare ``host[:port]``."""
    s = server.strip()
    for prefix in ("https://", "http://"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    s = s.rstrip("/")
    if s.endswith("/v1") or s.endswith("/v2"):
        s = s[:-3]
    if s in ("docker.io", "index.docker.io", "registry-1.docker.io", ""):
        return DOCKER_HUB_KEY
    return s


def config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def encode_registry_auth(username: str, password: str, server: str) -> str:
    """The ``X-Registry-Auth`` header value the docker CLI sends (base64url JSON)."""
    doc = {"username": username, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def decode_registry_auth(header: str | None) -> dict[str, str] | None:
    """Parse ``X-Registry-Auth``; None when absent or empty."""
    if not header:
        return None
    raw = header.strip()
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        try:
            doc = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, TypeError):
            return None
    if not isinstance(doc, dict):
        return None
    out = {k: str(v) for k, v in doc.items() if isinstance(v, str | int)}
    return out if (out.get("username") or out.get("identitytoken") or out.get("registrytoken")) else None


class DockerConfig:
    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: str | None = None) -> DockerConfig:
        path = path or os.path.join(config_dir(), "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                data = {}
        except FileNotFoundError:
            data = {}
        except ValueError:
            data = {}
        return cls(path, data)

    def get(self, registry: str) -> tuple[str, str] | None:
        """(username, password) for a registry domain, or None."""
        key = normalize_registry(registry)
        auths = self.data.get("auths") or {}
        for k, v in auths.items():
            if normalize_registry(k) == key and isinstance(v, dict):
                if v.get("auth"):
                    try:
                        user, _, pw = base64.b64decode(v["auth"]).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    return user, pw
                if v.get("username"):
                    return v["username"], v.get("password", "")
        return None

    def set(self, registry: str, username: str, password: str) -> None:
        auths = self.data.setdefault("auths", {})
        auths[normalize_registry(registry)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}

    def remove(self, registry: str) -> bool:
        key = normalize_registry(registry)
        auths = self.data.get("auths") or {}
        keys = [k for k in auths if normalize_registry(k) == key]
        for k in keys:
            del auths[k]
        return bool(keys)

    def save(self) -> None:
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        write_atomic(self.path, json.dumps(self.data, indent="\t").encode() + b"\n", mode=0o600)
