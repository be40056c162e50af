"""A long-lived, single-threaded helper process for the runtime's forking ``create``.

``tugboat.runtime.api.Runtime.create`` must not fork from a multi-threaded process, so in the
daemon it spawns a fresh ``python -I -S`` helper per container (about 40-50 ms of interpreter
start and imports on every ``docker run``). The engine instead keeps one such process alive: it is
started once, imports the runtime once, and serves ``create`` requests over a SOCK_SEQPACKET
socket pair (a JSON request plus the container's stdin/stdout/stderr as SCM_RIGHTS fds; a JSON
reply). Inside it ``Runtime.create`` forks directly, as in the ``tug-runtime`` CLI. Its parent is
the daemon, so double-forked monitors are re-parented to the daemon (a subreaper) exactly as with
the per-call helper. It exits when the daemon closes its end (or dies).

Only stdlib and ``tugboat.runtime`` are imported here (``python -I -S``: no site-packages).
"""

from __future__ import annotations

import json
import os
import socket


def serve(fd: int, root: str, cgroup_parent: str | None) -> None:
    from tugboat.errors import TugError
    from tugboat.runtime.api import Runtime

    sock = socket.socket(fileno=fd)
    warnings: list[str] = []
    rt = Runtime(root, cgroup_parent=cgroup_parent, warn=warnings.append)
    me = os.getpid()
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 3)
        except OSError:
            return
        if not msg:
            return
        warnings.clear()
        try:
            req = json.loads(msg)
            if len(fds) != 3:
                raise TugError(f"runtime worker: expected 3 stdio fds, got {len(fds)}")
            st = rt.create(req["id"], req["bundle"], console_socket=req.get("console_socket"),
                           pid_file=req.get("pid_file"), stdin=fds[0], stdout=fds[1], stderr=fds[2])
            resp: dict = {"ok": True, "pid": int((st or {}).get("pid") or 0)}
        except TugError as exc:
            resp = {"error": str(exc), "kind": type(exc).__name__}
        except Exception as exc:
            resp = {"error": f"{type(exc).__name__}: {exc}", "kind": "Internal"}
        finally:
            if os.getpid() != me:  # never let a forked child come back into this loop
                os._exit(127)
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
        resp["warnings"] = list(warnings)
        try:
            sock.sendall(json.dumps(resp).encode())
        except OSError:
            return
