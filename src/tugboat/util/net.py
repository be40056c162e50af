"""Local socket helpers."""

from __future__ import annotations

import socket
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (bind to port 0 and let go)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def peer_identity(peercert: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """(common name, organizations) of a verified TLS peer certificate (``getpeercert()``'s
    dict), or None without one or without a CN: a Kubernetes user and its groups."""
    if not peercert:
        return None
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    return (cn, orgs) if cn else None
