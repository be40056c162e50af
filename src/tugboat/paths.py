"""Where tugboat keeps its data: the data root (``--root`` / ``TUG_ROOT``) and the daemon socket."""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/tugboat"
DEFAULT_HOST = "unix:///run/tugboat/tug.sock"


def data_root(explicit: str | None = None) -> str:
    """The data root: an explicit ``--root`` wins, then ``TUG_ROOT``, then /var/lib/tugboat."""
    return os.path.abspath(explicit or os.environ.get("TUG_ROOT") or DEFAULT_ROOT)


def daemon_host(explicit: str | None = None) -> str:
    """The daemon address: ``--host``, then ``TUG_HOST``, then ``DOCKER_HOST``-free default."""
    return explicit or os.environ.get("TUG_HOST") or DEFAULT_HOST
