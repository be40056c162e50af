"""Local socket helpers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (bind to port 0 and let go)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
